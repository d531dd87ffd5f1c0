// Formatting of numbers with units and of dates, shared by every view.

const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const nfExact = new Intl.NumberFormat('en-US', { maximumFractionDigits: 6 });

/** unitOf names the unit of an item's usage, as the API's events do. */
export function unitOf(item) {
  return item === 'Cpu' ? 'core-hours' : 'GiB-hours';
}

/** number formats a usage with two decimals at most (exact: six). */
export function number(v, exact = false) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  return (exact ? nfExact : nf).format(v);
}

/** usage formats a value with its unit, e.g. "1,234.5 core-hours". */
export function usage(v, item, exact = false) {
  return `${number(v, exact)} ${unitOf(item)}`;
}

/** money formats a cost in the API's currency. */
export function money(v, currency) {
  try {
    return new Intl.NumberFormat('en-US', { style: 'currency', currency, maximumFractionDigits: 2 }).format(v);
  } catch {
    return `${number(v)} ${currency}`;
  }
}

/** percent formats a change, signed, e.g. "+12.3 %"; null when undefined. */
export function percent(now, before) {
  if (!before) return null;
  const p = ((now - before) / before) * 100;
  const s = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, signDisplay: 'exceptZero' }).format(p);
  return `${s} %`;
}

/** apiDay turns the API's YYYYMMDD into YYYY-MM-DD. */
export function apiDay(d) {
  return `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;
}

/** bucketLabel names a bucket: its day, or first – last day. */
export function bucketLabel(start, end) {
  return start === end ? apiDay(start) : `${apiDay(start)} – ${apiDay(end)}`;
}
