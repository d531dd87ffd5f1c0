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
 * usage} | null, cost: number | null, currency, partial, prevPartial}. partial
 * (prevPartial for the previous period) tells that the totals had more
 * rows than the console reads (MAX_ROWS of totals.js): the sums are then
 * marked as partial, never passed off as the whole. The tiles of total, previous period and cost carry
 * their exact value in data-value.
 */
export function renderTiles(root, d) {
  const change = percent(d.total, d.previous);
  const total = tile('tile-total', 'Total', amount(d.total, d.item),
    d.partial ? h('span', { class: 'partial' }, `partial sum · ${d.rangeLabel}`) : d.rangeLabel);
  total.dataset.value = String(d.total);
  const previous = tile('tile-previous', 'Previous period', amount(d.previous, d.item),
    h('span', {}, d.prevPartial ? h('span', { class: 'partial' }, 'partial sum · ') : null,
      change ? h('span', { class: d.total >= d.previous ? 'up' : 'down' }, change) : 'no usage before',
      ` vs ${bucketLabel(d.prevRange[0].replaceAll('-', ''), d.prevRange[1].replaceAll('-', ''))}`));
  previous.dataset.value = String(d.previous);
  const tiles = [
    total,
    previous,
    tile('tile-top', `Top ${d.aggLabel}`, d.top ? entityLabel(d.top.row) : '–', d.top ? usage(d.top.usage, d.item) : 'no usage'),
  ];
  if (d.cost !== null) {
    const t = tile('tile-cost', 'Cost', money(d.cost, d.currency),
      d.partial ? h('span', { class: 'partial' }, `partial sum · priced ${d.item} ${d.method}`) : `priced ${d.item} ${d.method}`);
    t.dataset.value = String(d.cost);
    tiles.push(t);
  }
  else tiles.push(tile('tile-cost', 'Cost', '–', d.priced ? 'no cost in this range' : `no price for ${d.item} ${d.method}`));
  root.replaceChildren(...tiles);
}
