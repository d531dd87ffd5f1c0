// The summary tiles: the range's total, the previous period of equal
// length with the change, the top entity, and the cost when priced.

import { bucketLabel, money, number, percent, unitOf, usage } from '../format.js';
import { entityLabel } from '../chartoption.js';
import { h } from './dom.js';

// amount is a big number with its unit in small print.
function amount(v, item) {
  return h('span', {}, number(v), h('span', { class: 'unit' }, ` ${unitOf(item)}`));
}

function tile(id, label, value, sub) {
  return h('div', { class: 'tile', id },
    h('div', { class: 'tile-label' }, label),
    h('div', { class: 'tile-value' }, value),
    h('div', { class: 'tile-sub' }, sub || '\u00a0'));
}

/**
 * renderTiles fills root. d: {item, total, previous, prevRange, top: {row,
 * usage} | null, cost: number | null, currency}.
 */
export function renderTiles(root, d) {
  const change = percent(d.total, d.previous);
  const tiles = [
    tile('tile-total', 'Total', amount(d.total, d.item), d.rangeLabel),
    tile('tile-previous', 'Previous period', amount(d.previous, d.item),
      h('span', {}, change ? h('span', { class: d.total >= d.previous ? 'up' : 'down' }, change) : 'no usage before', ` vs ${bucketLabel(d.prevRange[0].replaceAll('-', ''), d.prevRange[1].replaceAll('-', ''))}`)),
    tile('tile-top', `Top ${d.aggLabel}`, d.top ? entityLabel(d.top.row) : '–', d.top ? usage(d.top.usage, d.item) : 'no usage'),
  ];
  if (d.cost !== null) {
    const t = tile('tile-cost', 'Cost', money(d.cost, d.currency), `priced ${d.item} ${d.method}`);
    t.dataset.value = String(d.cost);
    tiles.push(t);
  }
  else tiles.push(tile('tile-cost', 'Cost', '–', d.priced ? 'no cost in this range' : `no price for ${d.item} ${d.method}`));
  root.replaceChildren(...tiles);
}
