// The view state and its URL: every control writes the state into the
// query string (history.pushState), so a view can be bookmarked and shared
// and back/forward work. Defaults are those of the platform's usage page.

export const AGGS = ['project', 'namespace', 'cluster', 'group'];
export const ITEMS = ['Cpu', 'Memory', 'Storage'];
export const METHODS = ['Effective', 'Request', 'Usage', 'ProjectQuota'];
export const STEPS = ['day', 'week', 'month'];
export const ORDERS = ['name', 'usage'];
export const PAGE_SIZES = [20, 50, 100, 500];
export const PRESETS = {
  'this-month': 'This month',
  'last-month': 'Last month',
  'last-7': 'Last 7 days',
  'last-30': 'Last 30 days',
  'last-90': 'Last 90 days',
  'this-year': 'This year',
  custom: 'Custom',
};

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const NAME = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;
// A label key (optional DNS prefix and '/') and a label value: the group
// aggregation's groupBy and name (the API checks them exactly).
const LABEL_KEY = /^([a-z0-9.-]{1,253}\/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(__[a-z]+__|[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)$/;

/** defaults returns the default state. */
export function defaults() {
  return {
    project: '', agg: 'project', name: '', groupBy: '', item: 'Cpu', method: 'Effective', step: 'day',
    range: 'this-month', start: '', end: '', order: 'name', page: 1, size: 20,
  };
}

function pick(v, allowed, def) {
  return allowed.includes(v) ? v : def;
}

/** parse reads a state from a query string; bad values fall back to defaults. */
export function parse(search) {
  const p = new URLSearchParams(search);
  const d = defaults();
  const s = {
    project: NAME.test(p.get('project') || '') ? p.get('project') : '',
    agg: pick(p.get('agg'), AGGS, d.agg),
    name: (p.get('agg') === 'group' ? LABEL_VALUE : NAME).test(p.get('name') || '') ? p.get('name') : '',
    groupBy: LABEL_KEY.test(p.get('groupBy') || '') ? p.get('groupBy') : '',
    item: pick(p.get('item'), ITEMS, d.item),
    method: pick(p.get('method'), METHODS, d.method),
    step: pick(p.get('step'), STEPS, d.step),
    range: pick(p.get('range'), Object.keys(PRESETS), d.range),
    start: DATE.test(p.get('start') || '') ? p.get('start') : '',
    end: DATE.test(p.get('end') || '') ? p.get('end') : '',
    order: pick(p.get('order'), ORDERS, d.order),
    page: Math.max(1, parseInt(p.get('page'), 10) || 1),
    size: pick(parseInt(p.get('size'), 10), PAGE_SIZES, d.size),
  };
  if (s.range !== 'custom') {
    s.start = '';
    s.end = '';
  } else if (!s.start || !s.end) {
    s.range = d.range;
  }
  if (s.project && s.agg === 'project') s.name = '';
  return s;
}

/** format writes a state as a query string (every field, for sharing). */
export function format(s) {
  const p = new URLSearchParams();
  if (s.project) p.set('project', s.project);
  p.set('agg', s.agg);
  if (s.agg === 'group' && s.groupBy) p.set('groupBy', s.groupBy);
  if (s.name) p.set('name', s.name);
  p.set('item', s.item);
  p.set('method', s.method);
  p.set('step', s.step);
  p.set('range', s.range);
  if (s.range === 'custom') {
    p.set('start', s.start);
    p.set('end', s.end);
  }
  p.set('order', s.order);
  p.set('page', String(s.page));
  p.set('size', String(s.size));
  return `?${p}`;
}

// Days as UTC dates: the billing zone's calendar comes from the API
// (config.today), so no local zone enters the arithmetic.
function toDate(s) {
  const [y, m, d] = s.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}
function toStr(dt) {
  return dt.toISOString().slice(0, 10);
}
function addDays(s, n) {
  const dt = toDate(s);
  dt.setUTCDate(dt.getUTCDate() + n);
  return toStr(dt);
}

/** daysBetween counts the days of start..end, both inclusive. */
export function daysBetween(start, end) {
  return Math.round((toDate(end) - toDate(start)) / 86400000) + 1;
}

/** range returns the [start, end] days (YYYY-MM-DD) of a state given today in the billing zone. */
export function range(s, today) {
  const [y, m] = today.split('-').map(Number);
  switch (s.range) {
    case 'custom':
      return s.start <= s.end ? [s.start, s.end] : [s.end, s.start];
    case 'last-month': {
      const first = toStr(new Date(Date.UTC(y, m - 2, 1)));
      const last = toStr(new Date(Date.UTC(y, m - 1, 0)));
      return [first, last];
    }
    case 'last-7':
      return [addDays(today, -6), today];
    case 'last-30':
      return [addDays(today, -29), today];
    case 'last-90':
      return [addDays(today, -89), today];
    case 'this-year':
      return [`${y}-01-01`, today];
    default:
      return [`${today.slice(0, 7)}-01`, today];
  }
}

/** previous returns the period of equal length right before [start, end]. */
export function previous([start, end]) {
  const n = daysBetween(start, end);
  return [addDays(start, -n), addDays(start, -1)];
}

/** kind maps a state to the API's kind parameter. */
export function kind(s) {
  if (s.project && s.agg === 'project') return 'project_all';
  return s.name ? s.agg : `${s.agg}_all`;
}
