// The one API client of the console: every request goes through here, with
// the bearer token of session storage, and every error is the API's
// Kubernetes Status (code, reason, message) as an ApiError.

const BASE = '/platform/cost.alauda.io/v1beta1';
const TOKEN_KEY = 'costmeter.token';

/** ApiError is a failed request: the Status code and message of the API. */
export class ApiError extends Error {
  constructor(code, reason, message) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers() {
  const h = { Accept: 'application/json' };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function fail(resp) {
  let st = {};
  try {
    st = await resp.json();
  } catch {
    /* not a Status */
  }
  return new ApiError(resp.status, st.reason || resp.statusText, st.message || `${resp.status} ${resp.statusText}`);
}

/** usagePath is the usage route: the project's when project is set. */
export function usagePath(project) {
  return project ? `${BASE}/projects/${encodeURIComponent(project)}/costs/usage` : `${BASE}/costs/usage`;
}

/** url builds a same-origin URL of path with params (empty values left out). */
export function url(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== '' && v !== undefined && v !== null) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** get fetches JSON, throwing ApiError on any non-2xx answer. */
export async function get(path, params, signal) {
  const resp = await fetch(url(path, params), { headers: headers(), signal });
  if (!resp.ok) throw await fail(resp);
  return resp.json();
}

/** config is the API's configuration and the caller's scope. */
export function config(signal) {
  return get(`${BASE}/config`, {}, signal);
}

/** usage fetches one page of the usage route. */
export function usage(project, params, signal) {
  return get(usagePath(project), params, signal);
}

/**
 * allRows fetches the rows of a query, 1000 at a time, at most max of them:
 * {rows, total, capped}. capped is true when the query has more rows than
 * were read (rows are then its first ones only): a caller that shows them
 * or sums them says so on the page.
 */
export async function allRows(project, params, signal, max = Infinity) {
  const rows = [];
  for (let page = 1; ; page++) {
    const r = await usage(project, { ...params, pageSize: 1000, currentPage: page }, signal);
    rows.push(...r.items);
    if (rows.length >= r.total || r.items.length === 0 || rows.length >= max) {
      rows.splice(max);
      return { rows, total: r.total, capped: rows.length < r.total };
    }
  }
}

/**
 * incompleteDays reads the coverage route (platform scope) for start..end
 * (YYYY-MM-DD; cluster optional) and returns a Map from day (YYYYMMDD) to
 * the clusters that have less than the whole day counted: [{cluster,
 * ratio}]. Days without any sample of a cluster have no coverage row and
 * are not listed.
 */
export async function incompleteDays(start, end, cluster, signal) {
  const out = new Map();
  for (let page = 1; ; page++) {
    const r = await get(`${BASE}/costs/coverage`, { start, end, cluster, pageSize: 1000, currentPage: page }, signal);
    for (const row of r.items) {
      if (row.ratio >= 1) continue;
      const list = out.get(row.day) || [];
      list.push({ cluster: row.cluster, ratio: row.ratio });
      out.set(row.day, list);
    }
    if (page * 1000 >= r.total || r.items.length === 0) return out;
  }
}

/** download saves a same-origin URL (a CSV export) with the auth header. */
export async function download(href, filename) {
  const resp = await fetch(href, { headers: { ...headers(), Accept: 'text/csv' } });
  if (!resp.ok) throw await fail(resp);
  const blob = await resp.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

/**
 * watch opens the watch route as Server-Sent Events over fetch (an
 * EventSource cannot send the Authorization header) and calls onEvent(name,
 * data) for each event until signal aborts. It resolves when the stream
 * ends and throws ApiError when the route refuses.
 */
export async function watch(project, params, onEvent, signal) {
  const resp = await fetch(url(`${usagePath(project)}/watch`, params), {
    headers: { ...headers(), Accept: 'text/event-stream' },
    signal,
    cache: 'no-store',
  });
  if (!resp.ok) throw await fail(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(name, data.join('\n'));
    }
  }
}
