// Live updates: while the range includes today, the watch route streams
// rollup changes of the view's entities; each change (after the stream's
// snapshot) asks the page to reload its data, at most once a second, so
// what is shown is always exactly what the usage routes answer.

import * as api from './api.js';

/** Live keeps at most one watch stream open. */
export class Live {
  constructor(onChange, onStatus) {
    this.onChange = onChange;
    this.onStatus = onStatus;
    this.ctl = null;
    this.timer = null;
  }

  stop() {
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
    clearTimeout(this.timer);
    this.onStatus('off');
  }

  /** follow watches kind/name/item of project (or the platform) until stop. */
  follow(project, params) {
    this.stop();
    const ctl = new AbortController();
    this.ctl = ctl;
    let last = 0;
    let pending = null;
    const changed = () => {
      const wait = Math.max(0, last + 1000 - Date.now());
      if (pending) return;
      pending = setTimeout(() => {
        pending = null;
        last = Date.now();
        if (!ctl.signal.aborted) this.onChange();
      }, wait);
    };
    ctl.signal.addEventListener('abort', () => clearTimeout(pending));
    const run = async (delay) => {
      let synced = false;
      try {
        await api.watch(project, params, (name) => {
          if (name === 'synced') {
            synced = true;
            this.onStatus('live');
          } else if (name === 'rollup' && synced) {
            changed();
          }
        }, ctl.signal);
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof api.ApiError && (e.code === 401 || e.code === 403 || e.code === 400)) {
          this.onStatus('off');
          return;
        }
      }
      if (ctl.signal.aborted) return;
      this.onStatus('reconnecting');
      this.timer = setTimeout(() => run(Math.min(delay * 2, 30000)), delay);
    };
    run(1000);
  }
}
