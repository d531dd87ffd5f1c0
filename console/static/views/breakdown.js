// A project's clusters over the whole range (shown when drilled into a
// project): each cluster's share, largest first; clicking one shows it.

import { usage } from '../format.js';
import { h } from './dom.js';

/**
 * renderBreakdown fills root with entries [{name, usage, row}] for item;
 * capped tells that the entries come from the first rows of the query
 * only, which the list then says.
 */
export function renderBreakdown(root, entries, item, onPick, capped = false) {
  const max = Math.max(...entries.map((e) => e.usage), 0);
  if (!entries.length) {
    root.replaceChildren(h('p', { class: 'muted' }, 'No cluster has usage in this period.'));
    return;
  }
  const note = capped ? h('p', { class: 'partial' }, 'Partial: the project has more cluster rows than the console reads; these sums are of the first ones only.') : null;
  root.replaceChildren(...(note ? [note] : []), h('ul', { class: 'breakdown' }, ...entries.map((e) => h('li', {},
    h('button', { type: 'button', class: 'link', onclick: () => onPick(e.row) }, e.name),
    h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: 'fill', style: `width:${max ? (100 * e.usage) / max : 0}%` })),
    h('span', { class: 'num' }, usage(e.usage, item))))));
}
