// Small DOM helpers shared by the views: h builds an element.

/** h creates an element with attributes (on* as listeners) and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** options builds <option>s from [value, label] pairs. */
export function options(pairs, selected) {
  return pairs.map(([v, l]) => h('option', { value: v, selected: String(v) === String(selected) }, l));
}
