// The console's wiring: reads the view state from the URL, loads what the
// views show from the public API routes, renders them, and follows today
// live. Views live in views/, the API client in api.js, the chart's option
// in chartoption.js.

import * as api from './api.js';
import { chartOption, entityKey, TOP } from './chartoption.js';
import { bucketLabel } from './format.js';
import { Live } from './live.js';
import * as st from './state.js';
import { MAX_ROWS, scopeTotals, totalsQuery } from './totals.js';
import { askToken, renderWho } from './views/auth.js';
import { renderBreakdown } from './views/breakdown.js';
import { Chart } from './views/chart.js';
import { Controls } from './views/controls.js';
import { renderCrumbs } from './views/crumbs.js';
import { h } from './views/dom.js';
import { Table } from './views/table.js';
import { renderTiles } from './views/tiles.js';

const $ = (id) => document.getElementById(id);

let cfg = null;
let state = st.defaults();
let loadCtl = null;
let loads = 0;
let painted = false;

const controls = new Controls($('controls'), (patch) => navigate(patch));
const table = new Table($('table'), (patch) => navigate(patch, false), drillRow, download);
const chart = new Chart($('chart'), (key) => drillKey(key));
const live = new Live(() => load({ quiet: true }), (s) => {
  const el = $('live');
  el.dataset.status = s;
  el.textContent = { live: 'Live', reconnecting: 'Reconnecting…', off: '' }[s];
  el.hidden = s === 'off';
});
let chartEntities = new Map(); // series id -> row

/** confine keeps a project-scoped caller inside its projects. */
function confine(s) {
  if (cfg && !cfg.scope.platform && !cfg.scope.projects.includes(s.project)) {
    s = { ...s, project: cfg.scope.projects[0] || '', agg: s.agg === 'project' ? 'namespace' : s.agg, name: '' };
  }
  // The group aggregation needs a kept label key: the first one by default,
  // the project aggregation when the API keeps none.
  const keys = (cfg && cfg.groupKeys) || [];
  if (s.agg === 'group' && !keys.includes(s.groupBy)) {
    s = keys.length ? { ...s, groupBy: keys[0], name: '' } : { ...s, agg: s.project ? 'namespace' : 'project', groupBy: '', name: '' };
  }
  return s;
}

/** navigate applies a patch to the state, records it in the URL and reloads; resetPage goes back to page 1. */
function navigate(patch, resetPage = true) {
  const next = confine({ ...state, ...(resetPage ? { page: 1 } : {}), ...patch });
  if (next.project && next.agg === 'project') next.name = '';
  state = next;
  history.pushState(null, '', st.format(state));
  load();
}

/** drillRow goes one level down from a row: project -> its namespaces, namespace -> its days. */
function drillRow(r) {
  if (state.agg === 'project' && !state.project) {
    navigate({ project: r.project, agg: 'namespace', name: '' });
  } else if (state.agg === 'namespace') {
    navigate({ project: r.project, agg: 'namespace', name: r.namespace, step: 'day' });
  } else if (state.agg === 'cluster') {
    navigate({ agg: 'cluster', name: r.cluster, step: 'day' });
  }
}

function drillKey(key) {
  const r = chartEntities.get(key);
  if (r) drillRow(r);
}

async function download(href) {
  try {
    await api.download(href, 'usage.csv');
  } catch (e) {
    showError(e);
  }
}

function showError(e) {
  const n = $('notice');
  if (e instanceof api.ApiError) {
    const what = { 401: 'Not signed in', 403: 'Forbidden', 429: 'Too many requests', 503: 'Unavailable' }[e.code] || 'Error';
    n.replaceChildren(h('strong', {}, `${e.code} ${what}: `), e.message);
  } else {
    n.replaceChildren(h('strong', {}, 'Error: '), String(e.message || e));
  }
  n.dataset.code = e.code || '';
  n.hidden = false;
}

/** topRows reads the query in orderBy=usage order until it holds TOP entities (or all). */
async function topRows(base, signal) {
  const rows = [];
  const keys = new Set();
  for (let page = 1; ; page++) {
    const r = await api.usage(state.project, { ...base, orderBy: 'usage', pageSize: 1000, currentPage: page }, signal);
    for (const row of r.items) {
      const k = entityKey(row);
      if (!keys.has(k)) {
        if (keys.size === TOP) return rows;
        keys.add(k);
      }
      rows.push(row);
    }
    if (page * 1000 >= r.total || r.items.length === 0) return rows;
  }
}

function sum(list, f) {
  return list.reduce((a, x) => a + f(x), 0);
}

/** load fetches and renders the current state; quiet keeps the old view while loading (live updates). */
async function load({ quiet = false } = {}) {
  if (loadCtl) loadCtl.abort();
  const ctl = new AbortController();
  loadCtl = ctl;
  const { signal } = ctl;
  const range = st.range(state, cfg.today);
  const prev = st.previous(range);
  controls.update(state, cfg, range);
  renderCrumbs($('crumbs'), state, cfg.scope, (p) => navigate(p));
  document.body.dataset.busy = 'true';
  if (!quiet) $('notice').hidden = true;
  const base = {
    start: range[0], end: range[1], step: state.step, kind: st.kind(state),
    name: st.kind(state).endsWith('_all') ? '' : state.name, item: state.item, method: state.method,
    groupBy: state.agg === 'group' ? state.groupBy : '',
  };
  const aggLabel = state.project && state.agg === 'project' ? 'project' : state.agg;
  try {
    // Days not wholly counted (platform scope, daily rows): marked in the
    // table; today is still being counted and is left unmarked.
    const coverage = cfg.scope.platform && state.step === 'day'
      ? api.incompleteDays(range[0], range[1], state.agg === 'cluster' ? state.name : '', signal).catch(() => null)
      : null;
    const [page, top, totals, prevTotals, clusters, incomplete] = await Promise.all([
      api.usage(state.project, { ...base, currentPage: state.page, pageSize: state.size, orderBy: state.order === 'usage' ? 'usage' : '' }, signal),
      topRows(base, signal),
      scopeTotals(state.project, totalsQuery(state, base), signal),
      scopeTotals(state.project, totalsQuery(state, { ...base, start: prev[0], end: prev[1], step: 'month' }), signal),
      state.project && !state.name
        ? api.allRows(state.project, { ...base, kind: 'cluster_all', name: '', step: 'month', orderBy: 'usage' }, signal, MAX_ROWS)
        : null,
      coverage,
    ]);
    if (signal.aborted) return;
    incomplete?.delete(cfg.today.replaceAll('-', ''));
    const total = sum(totals.buckets, (b) => b.usage);
    const priced = cfg.priced.includes(`${state.item}/${state.method}`);
    const cost = priced ? sum(totals.buckets, (b) => b.cost || 0) : null;
    // The top entity: the first of the orderBy=usage rows, with its range total.
    let topEntity = null;
    if (top.length) {
      const k = entityKey(top[0]);
      topEntity = { row: top[0], usage: sum(top.filter((r) => entityKey(r) === k), (r) => r.usage) };
    }
    renderTiles($('tiles'), {
      item: state.item, method: state.method, total, previous: sum(prevTotals.buckets, (b) => b.usage), prevRange: prev,
      partial: totals.capped, prevPartial: prevTotals.capped,
      rangeLabel: bucketLabel(range[0].replaceAll('-', ''), range[1].replaceAll('-', '')),
      top: topEntity, aggLabel, cost, priced, currency: cfg.currency,
    });
    chartEntities = new Map(top.map((r) => [entityKey(r), r]));
    const option = chartOption({ rows: top, totals: state.name ? null : totals.buckets, item: state.item });
    const what = state.name ? `${state.agg} ${state.name}` : `top ${TOP} ${aggLabel}s`;
    $('chart-title').textContent = `${state.item} ${state.method} by ${state.step}: ${what}`;
    chart.show(option, `Stacked chart of ${state.item} usage by ${state.step}, ${what}`);
    table.show({
      state, page, total, cost, currency: cfg.currency, incomplete, partial: totals.capped,
      csvHref: api.url(api.usagePath(state.project), { ...base, format: 'csv', orderBy: state.order === 'usage' ? 'usage' : '' }),
    });
    const cc = $('clusters-card');
    cc.hidden = !clusters;
    if (clusters) {
      const m = new Map();
      for (const r of clusters.rows) {
        const e = m.get(r.cluster) || { name: r.cluster, usage: 0, row: r };
        e.usage += r.usage;
        m.set(r.cluster, e);
      }
      $('clusters-title').textContent = `Clusters of project ${state.project}`;
      renderBreakdown($('clusters'), [...m.values()], state.item, (r) => navigate({ agg: 'cluster', name: r.cluster, step: 'day' }), clusters.capped);
    }
    $('main').hidden = false;
    if (!painted) {
      painted = true;
      requestAnimationFrame(() => performance.mark('costmeter:first-paint'));
    }
    followToday(range);
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof api.ApiError && e.code === 401) {
      live.stop();
      await askToken(api.token() ? 'The token was refused (401 Unauthorized). Enter another.' : '');
      boot();
      return;
    }
    if (!quiet) {
      $('main').hidden = true;
      chart.clear();
    }
    showError(e);
  } finally {
    if (loadCtl === ctl) {
      loads++;
      document.body.dataset.loads = String(loads);
      document.body.dataset.busy = 'false';
    }
  }
}

let following = '';

/** followToday keeps a watch open while the range includes today. */
function followToday(range) {
  // The watch routes follow projects, clusters and namespaces, not groups.
  const want = cfg.watch && state.agg !== 'group' && range[0] <= cfg.today && cfg.today <= range[1];
  const key = want ? JSON.stringify([state.project, st.kind(state), state.name, state.item]) : '';
  if (key === following) return;
  following = key;
  if (!want) {
    live.stop();
    return;
  }
  const kind = st.kind(state);
  live.follow(state.project, { kind, name: kind.endsWith('_all') ? '' : state.name, item: state.item });
}

function signOut() {
  api.setToken('');
  $('controls').hidden = true;
  $('main').hidden = true;
  $('who').replaceChildren();
  live.stop();
  following = '';
  boot();
}

/** boot reads the API's configuration (asking for a token on 401), then the view. */
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
  renderWho($('who'), cfg.scope, Boolean(api.token()), signOut);
  $('controls').hidden = false;
  state = confine(st.parse(location.search));
  history.replaceState(null, '', st.format(state));
  following = '';
  await load();
}

window.addEventListener('popstate', () => {
  if (!cfg) return;
  state = confine(st.parse(location.search));
  load();
});

boot();
