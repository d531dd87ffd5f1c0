// The table of rows: the current page of the query, a totals row, paging
// with page size and order, and the CSV download of the same query.

import { bucketLabel, money, number, unitOf } from '../format.js';
import { PAGE_SIZES } from '../state.js';
import { h, options } from './dom.js';

/** Table renders into root; onChange(patch) for paging, onPick(row) to drill down. */
export class Table {
  constructor(root, onChange, onPick, onDownload) {
    this.onChange = onChange;
    this.onPick = onPick;
    this.size = h('select', { id: 'ctl-size', onchange: () => onChange({ size: Number(this.size.value), page: 1 }) });
    this.order = h('select', { id: 'ctl-order', onchange: () => onChange({ order: this.order.value, page: 1 }) });
    this.prev = h('button', { id: 'page-prev', type: 'button', onclick: () => onChange({ page: this.page - 1 }) }, '‹ Previous');
    this.next = h('button', { id: 'page-next', type: 'button', onclick: () => onChange({ page: this.page + 1 }) }, 'Next ›');
    this.info = h('span', { id: 'page-info', class: 'muted', 'aria-live': 'polite' });
    this.csv = h('a', {
      id: 'csv', class: 'button', download: 'usage.csv',
      onclick: (e) => {
        e.preventDefault();
        onDownload(this.csv.href);
      },
    }, 'Download CSV');
    this.table = h('table', { id: 'rows' });
    root.replaceChildren(
      h('div', { class: 'table-tools' },
        h('div', { class: 'field inline' }, h('label', { for: 'ctl-order' }, 'Order'), this.order),
        h('div', { class: 'field inline' }, h('label', { for: 'ctl-size' }, 'Rows per page'), this.size),
        h('span', { class: 'grow' }),
        this.csv),
      h('div', { class: 'table-wrap' }, this.table),
      h('div', { class: 'pager' }, this.prev, this.info, this.next),
    );
  }

  /**
   * show renders d: {state, page: API response, total: range total, cost,
   * currency, csvHref, incomplete: Map day → [{cluster, ratio}] or null,
   * partial: the total is a partial sum (said so in the totals row)}.
   * A daily row of a day some cluster (the row's own, when it has one) has
   * not wholly counted gets its period cell marked (class incomplete, the
   * clusters' shares in its title).
   */
  show(d) {
    const { state } = d;
    this.page = state.page;
    this.size.replaceChildren(...options(PAGE_SIZES.map((n) => [n, n]), state.size));
    this.order.replaceChildren(...options([['name', 'By name'], ['usage', 'By usage']], state.order));
    const pages = Math.max(1, Math.ceil(d.page.total / state.size));
    this.info.textContent = `Page ${state.page} of ${pages} · ${d.page.total} rows`;
    this.prev.disabled = state.page <= 1;
    this.next.disabled = state.page >= pages;
    this.csv.href = d.csvHref;
    const priced = d.page.items.some((r) => r.cost !== undefined) || d.cost !== null;
    const nsCol = state.agg === 'namespace';
    const grCol = state.agg === 'group';
    const clCol = state.agg === 'namespace' || state.agg === 'cluster';
    const unit = unitOf(state.item);
    const head = h('tr', {},
      !state.project && state.agg !== 'project' && !grCol ? h('th', { scope: 'col' }, 'Project') : null,
      state.agg === 'project' ? h('th', { scope: 'col' }, 'Project') : null,
      grCol ? h('th', { scope: 'col' }, state.groupBy) : null,
      nsCol ? h('th', { scope: 'col' }, 'Namespace') : null,
      clCol ? h('th', { scope: 'col' }, 'Cluster') : null,
      h('th', { scope: 'col' }, 'Period'),
      h('th', { scope: 'col', class: 'num' }, `Usage (${unit})`),
      priced ? h('th', { scope: 'col', class: 'num' }, `Cost (${d.currency})`) : null);
    const link = (r, text) => h('button', { type: 'button', class: 'link', onclick: () => this.onPick(r) }, text);
    const body = d.page.items.map((r) => h('tr', {},
      !state.project && state.agg !== 'project' && !grCol ? h('td', {}, r.project) : null,
      state.agg === 'project' ? h('td', {}, link(r, r.project)) : null,
      grCol ? h('td', {}, r.group) : null,
      nsCol ? h('td', {}, link(r, r.namespace)) : null,
      clCol ? h('td', {}, state.agg === 'cluster' ? link(r, r.cluster) : r.cluster) : null,
      periodCell(r, d.incomplete),
      h('td', { class: 'num', title: String(r.usage) }, number(r.usage)),
      priced ? h('td', { class: 'num' }, r.cost === undefined ? '–' : number(r.cost)) : null));
    if (body.length === 0) {
      body.push(h('tr', {}, h('td', { colspan: head.children.length, class: 'empty' }, 'No usage in this period.')));
    }
    const span = head.children.length - (priced ? 2 : 1);
    const foot = h('tr', { class: 'totals' },
      h('th', { scope: 'row', colspan: span }, d.partial
        ? h('span', { class: 'partial' }, 'Partial total: the scope has more rows than the console reads')
        : `Total of all ${d.page.total} rows`),
      h('td', { class: 'num', id: 'total-usage', title: String(d.total) }, number(d.total)),
      priced ? h('td', { class: 'num' }, d.cost === null ? '–' : money(d.cost, d.currency)) : null);
    this.table.replaceChildren(
      h('caption', { class: 'sr-only' }, `Usage rows, ${unit}`),
      h('thead', {}, head), h('tbody', {}, body), h('tfoot', {}, foot));
  }
}

/** periodCell is a row's period, marked when its day is incomplete. */
function periodCell(r, incomplete) {
  const gaps = r.start === r.end && incomplete ? (incomplete.get(r.start) || []).filter((g) => !r.cluster || g.cluster === r.cluster) : [];
  if (gaps.length === 0) return h('td', {}, bucketLabel(r.start, r.end));
  const what = gaps.map((g) => `${g.cluster} ${(g.ratio * 100).toFixed(1)}%`).join(', ');
  return h('td', { class: 'incomplete', title: `Incomplete day: counted ${what} of the day` }, bucketLabel(r.start, r.end));
}
