// A project's clusters over the whole range (shown when drilled into a
// project): each cluster's share, largest first; clicking one shows it.

import { usage } from '../format.js';
import { h } from './dom.js';

/** renderBreakdown fills root with entries [{name, usage, row}] for item. */
export function renderBreakdown(root, entries, item, onPick) {
  const max = Math.max(...entries.map((e) => e.usage), 0);
  if (!entries.length) {
    root.replaceChildren(h('p', { class: 'muted' }, 'No cluster has usage in this period.'));
    return;
  }
  root.replaceChildren(h('ul', { class: 'breakdown' }, ...entries.map((e) => h('li', {},
    h('button', { type: 'button', class: 'link', onclick: () => onPick(e.row) }, e.name),
    h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: 'fill', style: `width:${max ? (100 * e.usage) / max : 0}%` })),
    h('span', { class: 'num' }, usage(e.usage, item))))));
}
