// The query controls: aggregation (and a single named entity), item,
// method, step, date range with presets, and the billing time zone.

import { AGGS, ITEMS, METHODS, PRESETS, STEPS } from '../state.js';
import { h, options } from './dom.js';

const AGG_LABELS = { project: 'Project', namespace: 'Namespace', cluster: 'Cluster', group: 'Team (label)' };
const METHOD_LABELS = { Effective: 'Effective', Request: 'Request', Usage: 'Usage', ProjectQuota: 'Project quota' };

function field(id, label, control) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control);
}

/** Controls renders into root and calls onChange(patch) when one changes. */
export class Controls {
  constructor(root, onChange) {
    this.onChange = onChange;
    this.agg = h('select', { id: 'ctl-agg', onchange: () => onChange({ agg: this.agg.value, name: '' }) });
    this.name = h('input', {
      id: 'ctl-name', type: 'search', placeholder: 'all', autocomplete: 'off', spellcheck: 'false',
      pattern: '[a-z0-9]([a-z0-9.\\-]*[a-z0-9])?', title: 'a lowercase name; empty for all',
      onchange: () => {
        const v = this.agg.value === 'group' ? this.name.value.trim() : this.name.value.trim().toLowerCase();
        if (v === '' || this.name.checkValidity()) onChange({ name: v });
      },
    });
    this.groupBy = h('select', { id: 'ctl-groupby', onchange: () => onChange({ groupBy: this.groupBy.value, name: '' }) });
    this.groupField = field('ctl-groupby', 'Label key', this.groupBy);
    this.item = h('select', { id: 'ctl-item', onchange: () => onChange({ item: this.item.value }) });
    this.method = h('select', { id: 'ctl-method', onchange: () => onChange({ method: this.method.value }) });
    this.step = h('select', { id: 'ctl-step', onchange: () => onChange({ step: this.step.value }) });
    this.range = h('select', {
      id: 'ctl-range',
      onchange: () => {
        const v = this.range.value;
        if (v === 'custom') onChange({ range: v, start: this.start.value, end: this.end.value });
        else onChange({ range: v });
      },
    });
    const custom = () => {
      if (this.start.value && this.end.value) onChange({ range: 'custom', start: this.start.value, end: this.end.value });
    };
    this.start = h('input', { id: 'ctl-start', type: 'date', onchange: custom });
    this.end = h('input', { id: 'ctl-end', type: 'date', onchange: custom });
    this.zone = h('span', { id: 'zone', class: 'zone', title: 'billing time zone: days start at midnight here' });
    this.nameLabel = h('label', { for: 'ctl-name' }, 'Name');
    root.replaceChildren(
      field('ctl-agg', 'Aggregate by', this.agg),
      this.groupField,
      h('div', { class: 'field' }, this.nameLabel, this.name),
      field('ctl-item', 'Resource', this.item),
      field('ctl-method', 'Method', this.method),
      field('ctl-step', 'Step', this.step),
      field('ctl-range', 'Period', this.range),
      h('div', { class: 'field dates' },
        h('span', { class: 'label', id: 'dates-label' }, 'From – to, in the billing time zone'),
        h('div', { class: 'daterow', role: 'group', 'aria-labelledby': 'dates-label' },
          h('label', { for: 'ctl-start', class: 'sr-only' }, 'From'), this.start,
          h('span', { 'aria-hidden': 'true' }, '–'),
          h('label', { for: 'ctl-end', class: 'sr-only' }, 'To'), this.end,
          this.zone)),
    );
  }

  /** update shows state; [start, end] is its resolved range. */
  update(state, cfg, [start, end]) {
    const keys = cfg.groupKeys || [];
    const aggs = keys.length ? AGGS : AGGS.filter((a) => a !== 'group');
    this.agg.replaceChildren(...options(aggs.map((a) => [a, state.project && a === 'project' ? `Project total` : AGG_LABELS[a]]), state.agg));
    this.groupField.hidden = state.agg !== 'group';
    this.groupBy.replaceChildren(...options(keys.map((k) => [k, k]), state.groupBy));
    this.name.value = state.name;
    this.name.disabled = Boolean(state.project && state.agg === 'project');
    this.nameLabel.textContent = state.agg === 'group' ? `Only this ${state.groupBy} value` : `Only this ${state.agg}`;
    this.name.pattern = state.agg === 'group' ? '[A-Za-z0-9_]([A-Za-z0-9._\\-]*[A-Za-z0-9_])?' : '[a-z0-9]([a-z0-9.\\-]*[a-z0-9])?';
    this.item.replaceChildren(...options(ITEMS.map((i) => [i, i]), state.item));
    this.method.replaceChildren(...options(METHODS.map((m) => [m, METHOD_LABELS[m]]), state.method));
    this.step.replaceChildren(...options(STEPS.map((s) => [s, `By ${s}`]), state.step));
    this.range.replaceChildren(...options(Object.entries(PRESETS), state.range));
    this.start.value = start;
    this.end.value = end;
    this.start.max = cfg.today;
    this.end.max = cfg.today;
    this.zone.textContent = cfg.timezone;
  }
}
