// The stacked usage chart (Apache ECharts, vendored): one instance, its
// option replaced on every load; clicking an entity drills down.

import { OTHERS } from '../chartoption.js';

/** Chart wraps the ECharts instance in el. */
export class Chart {
  constructor(el, onPick) {
    this.el = el;
    this.chart = window.echarts.init(el, null, { renderer: 'canvas' });
    this.chart.on('click', (p) => {
      if (p.seriesId && p.seriesId !== OTHERS) onPick(p.seriesId);
    });
    // data-finished tells tests and screenshots that drawing (and its
    // short animation) is over.
    this.chart.on('finished', () => {
      el.dataset.finished = 'true';
    });
    new ResizeObserver(() => this.chart.resize()).observe(el);
  }

  /** show replaces the chart's option. */
  show(option, label) {
    this.el.dataset.finished = 'false';
    this.chart.setOption(option, { notMerge: true });
    this.el.setAttribute('aria-label', label);
  }

  clear() {
    this.chart.clear();
  }
}
