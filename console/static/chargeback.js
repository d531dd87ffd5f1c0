// The Chargeback view: the bill route (costs/allocation) grouped by one
// kept label key over a range: per group its direct, shared, idle and
// overhead cost as stacked bars and a table, the reconciliation line
// (cluster cost = allocated, to the printed unit) and a CSV download of
// the table. The state (groupBy, range, project) lives in the URL.

import * as api from './api.js';
import { bucketLabel, money } from './format.js';
import { PRESETS, range as rangeOf } from './state.js';
import { askToken, renderWho } from './views/auth.js';
import { h, options } from './views/dom.js';

const $ = (id) => document.getElementById(id);
const PARTS = ['direct', 'shared', 'idle', 'overhead'];
const COLORS = { direct: '#3b82f6', shared: '#a855f7', idle: '#94a3b8', overhead: '#f59e0b' };

let cfg = null;
let state = null;
let chart = null;
let loadCtl = null;
let loads = 0;

/** parse reads the view's state from the URL. */
function parse(search) {
  const p = new URLSearchParams(search);
  const keys = cfg.groupKeys || [];
  const s = {
    groupBy: keys.includes(p.get('groupBy')) ? p.get('groupBy') : keys[0] || '',
    range: Object.hasOwn(PRESETS, p.get('range') || '') ? p.get('range') : 'this-month',
    start: /^\d{4}-\d{2}-\d{2}$/.test(p.get('start') || '') ? p.get('start') : '',
    end: /^\d{4}-\d{2}-\d{2}$/.test(p.get('end') || '') ? p.get('end') : '',
    project: p.get('project') || '',
  };
  if (s.range === 'custom' && (!s.start || !s.end)) s.range = 'this-month';
  if (!cfg.scope.platform && !cfg.scope.projects.includes(s.project)) s.project = cfg.scope.projects[0] || '';
  return s;
}

function format(s) {
  const p = new URLSearchParams();
  if (s.project) p.set('project', s.project);
  p.set('groupBy', s.groupBy);
  p.set('range', s.range);
  if (s.range === 'custom') {
    p.set('start', s.start);
    p.set('end', s.end);
  }
  return `?${p}`;
}

function navigate(patch) {
  state = { ...state, ...patch };
  history.pushState(null, '', format(state));
  load();
}

function renderControls() {
  const keys = cfg.groupKeys || [];
  const field = (label, control) => h('div', { class: 'field' }, h('label', { for: control.id }, label), control);
  const groupBy = h('select', { id: 'groupBy', onchange: (e) => navigate({ groupBy: e.target.value }) },
    ...options(keys.map((k) => [k, k]), state.groupBy));
  const preset = h('select', { id: 'range', onchange: (e) => navigate({ range: e.target.value }) },
    ...options(Object.entries(PRESETS), state.range));
  const start = h('input', { id: 'start', type: 'date', value: rangeOf(state, cfg.today)[0],
    onchange: (e) => navigate({ range: 'custom', start: e.target.value, end: $('end').value }) });
  const end = h('input', { id: 'end', type: 'date', value: rangeOf(state, cfg.today)[1],
    onchange: (e) => navigate({ range: 'custom', start: $('start').value, end: e.target.value }) });
  const children = [field('Group by', groupBy), field('Period', preset), field('From', start), field('To', end)];
  if (!cfg.scope.platform) {
    children.unshift(field('Project', h('select', { id: 'project', onchange: (e) => navigate({ project: e.target.value }) },
      ...options(cfg.scope.projects.map((p) => [p, p]), state.project))));
  }
  $('controls').replaceChildren(...children);
}

function showError(e) {
  const n = $('notice');
  const code = e instanceof api.ApiError ? e.code : '';
  n.replaceChildren(h('strong', {}, code ? `${code}: ` : 'Error: '), String(e.message || e));
  n.dataset.code = code;
  n.hidden = false;
}

/** billPath is the bill route: the project's when project is set. */
function billPath(project) {
  const base = '/platform/cost.alauda.io/v1beta1';
  return project ? `${base}/projects/${encodeURIComponent(project)}/costs/allocation` : `${base}/costs/allocation`;
}

/** totals sums the buckets of the bill per group: {group -> parts}, and the reconciliation. */
export function summarise(bill) {
  const groups = new Map();
  let clusterCost = 0;
  let allocated = 0;
  let capacityKnown = true;
  const scale = 10 ** bill.decimals;
  // Amounts are whole numbers of the printed unit: sum them as integers.
  const units = (v) => Math.round(v * scale);
  for (const b of bill.items) {
    clusterCost += units(b.clusterCost);
    allocated += units(b.allocated);
    capacityKnown = capacityKnown && b.capacityKnown;
    for (const g of b.groups) {
      const e = groups.get(g.group) || { group: g.group, direct: 0, shared: 0, idle: 0, overhead: 0, total: 0 };
      for (const k of [...PARTS, 'total']) e[k] += units(g[k]);
      groups.set(g.group, e);
    }
  }
  const rows = [...groups.values()].sort((a, b) => b.total - a.total || (a.group < b.group ? -1 : 1));
  return { rows, clusterCost, allocated, capacityKnown, scale };
}

function amount(units, s) {
  return money(units / s.scale, cfg.currency);
}

function renderRecon(s, first, last) {
  const equal = s.clusterCost === s.allocated;
  const p = $('recon');
  p.dataset.clusterCost = String(s.clusterCost / s.scale);
  p.dataset.allocated = String(s.allocated / s.scale);
  p.dataset.equal = String(equal);
  p.replaceChildren(
    h('span', {}, `${bucketLabel(first.replaceAll('-', ''), last.replaceAll('-', ''))}: cluster cost `),
    h('strong', {}, amount(s.clusterCost, s)),
    h('span', { class: equal ? 'up' : 'down' }, equal ? ' = ' : ' ≠ '),
    h('span', {}, 'allocated '),
    h('strong', {}, amount(s.allocated, s)),
    s.capacityKnown ? null : h('span', { class: 'partial' }, ' · some cluster-days have no capacity samples: their idle is unknown'));
}

function renderChart(s) {
  if (!chart) {
    chart = window.echarts.init($('chart'), null, { renderer: 'canvas' });
    chart.on('finished', () => { $('chart').dataset.finished = 'true'; });
    new ResizeObserver(() => chart.resize()).observe($('chart'));
  }
  $('chart').dataset.finished = 'false';
  chart.setOption({
    animation: false,
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: { top: 0 },
    grid: { left: 8, right: 8, bottom: 8, top: 32, containLabel: true },
    xAxis: { type: 'category', data: s.rows.map((r) => r.group), axisLabel: { interval: 0, rotate: s.rows.length > 6 ? 30 : 0 } },
    yAxis: { type: 'value', name: cfg.currency },
    series: PARTS.map((part) => ({
      id: part, name: part, type: 'bar', stack: 'cost', color: COLORS[part],
      data: s.rows.map((r) => r[part] / s.scale),
    })),
  }, { notMerge: true });
}

function csvOf(s) {
  const lines = [['group', ...PARTS, 'total', 'currency'].join(',')];
  const fixed = (u) => (u / s.scale).toFixed(Math.round(Math.log10(s.scale)));
  for (const r of s.rows) lines.push([r.group, ...PARTS.map((p) => fixed(r[p])), fixed(r.total), cfg.currency].join(','));
  lines.push(['allocated', '', '', '', '', fixed(s.allocated), cfg.currency].join(','));
  lines.push(['cluster cost', '', '', '', '', fixed(s.clusterCost), cfg.currency].join(','));
  return `${lines.join('\n')}\n`;
}

function renderTable(s) {
  const head = h('tr', {}, h('th', {}, state.groupBy), ...PARTS.map((p) => h('th', { class: 'num' }, p)), h('th', { class: 'num' }, 'total'));
  const body = s.rows.map((r) => h('tr', { 'data-group': r.group },
    h('td', {}, r.group), ...PARTS.map((p) => h('td', { class: 'num', 'data-value': String(r[p] / s.scale) }, amount(r[p], s))),
    h('td', { class: 'num', 'data-value': String(r.total / s.scale) }, amount(r.total, s))));
  const foot = h('tr', { class: 'recon-row' }, h('td', {}, 'allocated = cluster cost'),
    ...PARTS.map(() => h('td', {})), h('td', { class: 'num' }, `${amount(s.allocated, s)} = ${amount(s.clusterCost, s)}`));
  const download = h('button', { id: 'csv', type: 'button', onclick: () => {
    const a = h('a', { href: URL.createObjectURL(new Blob([csvOf(s)], { type: 'text/csv' })), download: `chargeback-${state.groupBy}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
  } }, 'Download CSV');
  $('table').replaceChildren(
    h('div', { class: 'table-tools' }, h('span', { class: 'grow muted' }, `${s.rows.length} groups of ${state.groupBy}`), download),
    h('div', { class: 'table-wrap' }, h('table', { id: 'bill-table' }, h('thead', {}, head), h('tbody', {}, ...body), h('tfoot', {}, foot))));
}

async function load() {
  if (loadCtl) loadCtl.abort();
  const ctl = new AbortController();
  loadCtl = ctl;
  renderControls();
  $('notice').hidden = true;
  document.body.dataset.busy = 'true';
  try {
    if (!state.groupBy) throw new Error('no label keys are kept (the API has no --allocation-labels): there is nothing to group by');
    const [first, last] = rangeOf(state, cfg.today);
    const bill = await api.get(billPath(state.project), { start: first, end: last, step: 'month', groupBy: state.groupBy }, ctl.signal);
    if (ctl.signal.aborted) return;
    const s = summarise(bill);
    renderRecon(s, first, last);
    $('main').hidden = false;
    renderChart(s);
    renderTable(s);
  } catch (e) {
    if (ctl.signal.aborted) return;
    if (e instanceof api.ApiError && e.code === 401) {
      await askToken(api.token() ? 'The token was refused (401 Unauthorized). Enter another.' : '');
      boot();
      return;
    }
    $('main').hidden = true;
    showError(e);
  } finally {
    if (loadCtl === ctl) {
      loads++;
      document.body.dataset.loads = String(loads);
      document.body.dataset.busy = 'false';
    }
  }
}

async function boot() {
  try {
    cfg = await api.config();
  } catch (e) {
    if (e instanceof api.ApiError && e.code === 401) {
      await askToken(api.token() ? 'The token was refused (401 Unauthorized). Enter another.' : '');
      return boot();
    }
    showError(e);
    return;
  }
  renderWho($('who'), cfg.scope, Boolean(api.token()), () => {
    api.setToken('');
    boot();
  });
  $('controls').hidden = false;
  state = parse(location.search);
  history.replaceState(null, '', format(state));
  await load();
}

window.addEventListener('popstate', () => {
  if (!cfg) return;
  state = parse(location.search);
  load();
});

boot();
