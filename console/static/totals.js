// The scope's total per bucket: the tiles' total and cost, the table's
// totals row and the chart's "others" all come from here. The server sums
// them: the console adds up only rows that are already the sums of a
// whole scope, and never the per-project or per-namespace rows, whose
// number grows with the platform.

import * as api from './api.js';

/**
 * totalsQuery is the query whose rows sum to the scope's total: the named
 * entity's own rows (a namespace name is unique in its cluster, so at most
 * one row per cluster and bucket); a project's own row (one per bucket);
 * and for the platform the cluster_all rows, one per cluster and bucket.
 * Every sample has exactly one cluster and one project, so the clusters'
 * sum is the platform's total, the same as the projects' sum.
 */
export function totalsQuery(s, base) {
  if (s.name) return base;
  // Every label key's groups add up to the same total (a namespace without
  // the label counts under __unallocated__).
  const q = { ...base, kind: s.project ? 'project_all' : 'cluster_all', name: '' };
  delete q.groupBy;
  return q;
}

/**
 * scopeTotals reads every row of totalsQuery (at most clusters × buckets)
 * and returns {buckets: [{start, end, usage, cost}] in time order, capped}.
 * capped is true when the rows were more than MAX_ROWS and the sums are
 * partial; the page then says so.
 */
export async function scopeTotals(project, query, signal) {
  const { rows, capped } = await api.allRows(project, query, signal, MAX_ROWS);
  return { buckets: sumByBucket(rows), capped };
}

/**
 * MAX_ROWS bounds what one scope's totals read: a year of days over 270
 * clusters. Beyond it the page shows the sums as partial rather than
 * reading without end.
 */
export const MAX_ROWS = 100000;

/** sumByBucket adds rows up per bucket; cost stays null when no row has one. */
export function sumByBucket(rows) {
  const m = new Map();
  for (const r of rows) {
    const b = m.get(r.start) || { start: r.start, end: r.end, usage: 0, cost: null };
    b.usage += r.usage;
    if (r.cost !== undefined) b.cost = (b.cost || 0) + r.cost;
    m.set(r.start, b);
  }
  return [...m.values()].sort((a, b) => (a.start < b.start ? -1 : 1));
}
