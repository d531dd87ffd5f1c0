// The chart's ECharts option, built from API rows by one pure function
// (no DOM, no fetch), so that a test can call it with rows of its own.

import { bucketLabel, unitOf, usage } from './format.js';

/** OTHERS is the id of the series holding everything outside the top entities. */
export const OTHERS = '__others';

/** TOP is how many entities the chart shows; the rest are "others". */
export const TOP = 10;

/** entityKey identifies a row's entity: "project/cluster/namespace", and a group row's value. */
export function entityKey(r) {
  return r.group ? `${r.project}/${r.groupBy}=${r.group}` : `${r.project}/${r.cluster}/${r.namespace}`;
}

/** entityLabel names a row's entity for people. */
export function entityLabel(r) {
  if (r.group) return r.group;
  if (r.namespace) return r.cluster ? `${r.namespace} (${r.cluster})` : r.namespace;
  if (r.cluster) return r.cluster;
  return r.project;
}

const PALETTE = ['#2563eb', '#16a34a', '#f59e0b', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#ea580c', '#4f46e5'];
const OTHERS_COLOR = '#9ca3af';

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Sums of floats leave noise like 1e-13; the chart shows what the API
// says, so others are rounded to a billionth of a unit-hour.
function clean(v) {
  const r = Math.round(v * 1e9) / 1e9;
  return r > 0 ? r : 0;
}

/**
 * chartOption returns the ECharts option of a stacked bar chart: one bar per
 * bucket, one series per entity among the first `top` entities of rows (rows
 * in the API's orderBy=usage order, so the first entities are the largest
 * of the range), and a series "others" holding each bucket's total (from
 * totals, one row per bucket: the scope's own total) minus the top
 * entities. Without totals there is no "others".
 *
 * @param {{rows: object[], totals?: {start: string, end: string, usage: number}[], item: string, top?: number}} input
 */
export function chartOption({ rows, totals = null, item, top = TOP }) {
  const buckets = new Map(); // start -> {start, end}
  for (const b of totals || []) buckets.set(b.start, { start: b.start, end: b.end });
  for (const r of rows) if (!buckets.has(r.start)) buckets.set(r.start, { start: r.start, end: r.end });
  const order = [...buckets.values()].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const index = new Map(order.map((b, i) => [b.start, i]));

  const series = [];
  const byKey = new Map();
  for (const r of rows) {
    const key = entityKey(r);
    let s = byKey.get(key);
    if (!s) {
      if (byKey.size >= top) continue;
      s = {
        id: key,
        name: entityLabel(r),
        type: 'bar',
        stack: 'usage',
        emphasis: { focus: 'series' },
        itemStyle: { color: PALETTE[byKey.size % PALETTE.length] },
        data: order.map(() => 0),
      };
      byKey.set(key, s);
      series.push(s);
    }
    s.data[index.get(r.start)] += r.usage;
  }
  // "others" is left out when it is zero in every bucket (every entity is shown).
  if (totals) {
    const others = order.map(() => 0);
    for (const b of totals) others[index.get(b.start)] += b.usage;
    for (const s of series) s.data.forEach((v, i) => (others[i] -= v));
    if (others.some((v) => clean(v) > 0)) series.push({
      id: OTHERS,
      name: 'others',
      type: 'bar',
      stack: 'usage',
      emphasis: { focus: 'series' },
      itemStyle: { color: OTHERS_COLOR },
      data: others.map(clean),
    });
  }
  const unit = unitOf(item);
  return {
    animationDuration: 250,
    color: PALETTE,
    textStyle: { fontFamily: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif' },
    grid: { left: 16, right: 24, top: 36, bottom: 56, containLabel: true },
    legend: { type: 'scroll', bottom: 0, icon: 'roundRect' },
    tooltip: {
      trigger: 'axis',
      axisPointer: { type: 'shadow' },
      confine: true,
      formatter(params) {
        const list = Array.isArray(params) ? params : [params];
        if (!list.length) return '';
        const b = order[list[0].dataIndex];
        let sum = 0;
        const lines = list
          .filter((p) => p.value > 0)
          .map((p) => {
            sum += p.value;
            return `${p.marker}${esc(p.seriesName)}<span class="tt-v">${esc(usage(p.value, item, true))}</span>`;
          });
        return `<div class="tt"><b>${esc(bucketLabel(b.start, b.end))}</b><br>${lines.join('<br>')}<br><b>Total</b><span class="tt-v">${esc(usage(sum, item, true))}</span></div>`;
      },
    },
    xAxis: { type: 'category', data: order.map((b) => bucketLabel(b.start, b.end)), axisTick: { alignWithLabel: true } },
    yAxis: { type: 'value', name: unit, nameTextStyle: { align: 'left' } },
    series,
  };
}
