// The breadcrumb: where in the drill-down the view is (all projects ›
// project › entity), each step a link back; and the project switcher of a
// caller scoped to several projects.

import { h, options } from './dom.js';

/** renderCrumbs fills root for state; onChange(patch) navigates. */
export function renderCrumbs(root, state, scope, onChange) {
  const items = [];
  if (scope.platform) {
    items.push(h('a', { href: '?', onclick: (e) => { e.preventDefault(); onChange({ project: '', agg: 'project', name: '' }); } }, 'All projects'));
  }
  if (state.project) {
    if (!scope.platform && scope.projects.length > 1) {
      const sel = h('select', { id: 'ctl-project', 'aria-label': 'Project', onchange: () => onChange({ project: sel.value, agg: 'namespace', name: '' }) },
        ...options(scope.projects.map((p) => [p, p]), state.project));
      items.push(sel);
    } else {
      items.push(h('a', { href: '?', onclick: (e) => { e.preventDefault(); onChange({ agg: 'namespace', name: '' }); } }, `Project ${state.project}`));
    }
  }
  if (state.name) items.push(h('span', { 'aria-current': 'page' }, `${state.agg} ${state.name}`));
  root.replaceChildren(h('ol', {}, ...items.map((i) => h('li', {}, i))));
}
