// The virtualised log list.
//
// Data: a window of at most `windowMax` consecutive matching logs, in sequence order, loaded
// with the API's cursors: scrolling near the top reads the page before the first log
// (`order=desc&cursor=first-1`), near the bottom the page after the last (`order=asc&cursor=
// last+1`); when the window outgrows `windowMax`, the far side is dropped (and read again if the
// reader scrolls back). So the list walks through any number of logs, across chunks and tiers,
// in memory bounded by the window. A jump (to a sequence number, a time, the start or the end)
// replaces the window.
//
// Display: the window becomes items (logs, plus a separator wherever the tier or chunk changes,
// plus an edge at each end), each with a height; only the items in view (and a few around) are
// in the DOM, absolutely positioned in a spacer as tall as all items. Keeping the reader's place
// when items are added or dropped above: the first log in view and its offset are noted before,
// and restored after.

import { fmtInt, fmtTime, fmtBytes, h } from './util.js';

const ROW = 22; // px, one log line (style.css: .row)
const SEP = 28; // px, a tier/chunk separator (.sep)
const EDGE = 30; // px, the start/end edge (.edge)
const OVERSCAN = 12; // items rendered beyond each side of the view
const PREFETCH = 150; // items from an edge at which the next page is read
const RETRY_MS = 5000; // a failed page read is tried again after this

/** Binary search: index of the last offset ≤ y. */
function indexAt(offsets, y) {
  let lo = 0;
  let hi = offsets.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (offsets[mid] <= y) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export class LogList {
  /**
   * `viewport`: the scrolling element (focusable, role listbox). `opts`:
   * - `fetchPage({order, cursor, limit})` → Promise of an API page `{logs, nextCursor}`;
   * - `tierOf(seq)` → `{key, short, label, title}`: where a log is stored;
   * - `onSelect(seq)`, `onError(error, replaced)` (`replaced`: the window could not be
   *   opened and the list should say why), `describe(error)` → `{title, message}`,
   *   `onChange()` (window or state changed);
   * - `pageSize`, `windowMax`.
   */
  constructor(viewport, opts) {
    this.el = viewport;
    this.opts = opts;
    this.pageSize = opts.pageSize;
    this.windowMax = Math.max(opts.windowMax, 3 * opts.pageSize);
    this.spacer = h('div', { class: 'spacer' });
    this.el.replaceChildren(this.spacer);
    /** The loaded logs, ascending sequence numbers. */
    this.rows = [];
    /** Nothing matches before `rows[0]`. */
    this.atStart = false;
    /** Nothing matched after the last row when last read. */
    this.atEnd = false;
    /** When `atEnd` was last established (Date), for the end edge's text. */
    this.endCheckedAt = null;
    /** Live follow: the end edge says so, and new logs stick to the bottom. */
    this.following = false;
    /** A message shown instead of logs (empty episode, error), or null. */
    this.note = null;
    this.expanded = new Set();
    /** Measured heights of expanded rows, by sequence number. */
    this.heights = new Map();
    this.selected = null;
    this.gen = 0;
    this.loadingBefore = false;
    this.loadingAfter = false;
    this.resetting = false;
    /** The last failed read above / below the window: `{error, at}`; it is retried after
     * RETRY_MS, not at every frame. */
    this.failed = { before: null, after: null };
    this.items = [];
    this.offsets = [0];
    this.index = new Map();
    this.nodes = new Map();
    this.frame = 0;
    this.el.addEventListener('scroll', () => this.schedule());
    this.el.addEventListener('keydown', (e) => this.onKey(e));
    this.el.addEventListener('click', (e) => this.onClick(e));
    new ResizeObserver(() => this.schedule()).observe(this.el);
    this.rebuild();
  }

  // --- state -----------------------------------------------------------------------------

  busy() {
    return this.loadingBefore || this.loadingAfter || this.resetting;
  }

  setBusy() {
    this.el.setAttribute('aria-busy', String(Boolean(this.busy())));
  }

  firstSeq() {
    return this.rows.length ? this.rows[0].sequenceNumber : null;
  }

  lastSeq() {
    return this.rows.length ? this.rows[this.rows.length - 1].sequenceNumber : null;
  }

  /** Rows, separators and edges, with their heights and offsets. */
  rebuild() {
    const items = [];
    const edge = (key, text) => items.push({ kind: 'edge', key, text, height: EDGE });
    if (this.note) {
      items.push({ kind: 'note', key: 'note', note: this.note, height: 3 * EDGE });
    } else {
      if (this.rows.length || !this.atEnd) {
        edge(this.atStart ? 'start' : 'before',
          this.atStart ? 'Start of the selection' : this.failedText('before') ?? 'Loading earlier logs…');
      }
      let prev = null;
      for (const r of this.rows) {
        const tier = this.opts.tierOf(r.sequenceNumber);
        if (!prev || prev.key !== tier.key) {
          items.push({ kind: 'sep', key: `s${r.sequenceNumber}`, tier, seq: r.sequenceNumber, height: SEP });
        }
        prev = tier;
        const open = this.expanded.has(r.sequenceNumber);
        const height = open ? (this.heights.get(r.sequenceNumber) ?? ROW + this.detailLines(r) * 18 + 14) : ROW;
        items.push({ kind: 'row', key: `r${r.sequenceNumber}`, row: r, tier, open, height });
      }
      if (this.atEnd) {
        const when = this.endCheckedAt ? ` (as of ${this.endCheckedAt.toISOString().slice(11, 19)} UTC)` : '';
        edge('end', this.following ? 'Following: new logs appear here'
          : this.rows.length ? `End of the selection${when}` : `No logs match${when}`);
      } else {
        edge('after', this.failedText('after') ?? 'Loading later logs…');
      }
    }
    const offsets = new Array(items.length + 1);
    offsets[0] = 0;
    const index = new Map();
    items.forEach((it, i) => {
      offsets[i + 1] = offsets[i] + it.height;
      index.set(it.key, i);
    });
    this.items = items;
    this.offsets = offsets;
    this.index = index;
    this.spacer.style.height = `${offsets[items.length]}px`;
  }

  /** The edge's text after a failed read on that side, or null. */
  failedText(side) {
    const f = this.failed[side];
    if (!f) return null;
    const d = this.opts.describe(f.error);
    return `Could not read ${side === 'before' ? 'earlier' : 'later'} logs: ${d.title}. ${d.message} (retrying)`;
  }

  /** Whether reading on `side` waits after a failure. */
  holding(side) {
    const f = this.failed[side];
    return Boolean(f && performance.now() - f.at < RETRY_MS);
  }

  /** Notes a failed read on `side` and schedules the retry. */
  failSide(side, e) {
    if (e && e.name === 'AbortError') return;
    this.failed[side] = { error: e, at: performance.now() };
    this.relayout(() => {});
    this.opts.onError(e, false);
    setTimeout(() => this.schedule(), RETRY_MS + 50);
  }

  detailLines(r) {
    return this.detailText(r).split('\n').length;
  }

  detailText(r) {
    const tier = this.opts.tierOf(r.sequenceNumber);
    const lines = [
      `sequence ${r.sequenceNumber}   id ${r.id}   level ${r.level}`,
      `timestamp ${r.timestamp}   stored ${r.createdAt}   ${tier.title}`,
      'message:',
      r.message,
    ];
    if (r.metadata !== undefined) lines.push('metadata:', JSON.stringify(r.metadata, null, 2));
    return lines.join('\n');
  }

  /** The first log at or below the top of the view and how far above the top it starts. */
  anchor() {
    const top = this.el.scrollTop;
    let i = indexAt(this.offsets, top);
    while (i < this.items.length && this.items[i].kind !== 'row') i += 1;
    if (i >= this.items.length) return null;
    return { key: this.items[i].key, delta: top - this.offsets[i] };
  }

  restore(a) {
    if (!a) return;
    const i = this.index.get(a.key);
    if (i !== undefined) this.el.scrollTop = this.offsets[i] + a.delta;
  }

  atBottom() {
    return this.el.scrollTop + this.el.clientHeight >= this.offsets[this.items.length] - 4;
  }

  // --- loading ---------------------------------------------------------------------------

  /** Replaces the window with `rows`; `target`: the sequence number to select and show. */
  setWindow(rows, { atStart, atEnd, target = null, align = 'third' }) {
    const t0 = performance.now();
    this.rows = rows;
    this.atStart = atStart;
    this.atEnd = atEnd;
    if (atEnd) this.endCheckedAt = new Date();
    this.note = null;
    this.nodes.clear();
    this.rebuild();
    if (target !== null && rows.length) {
      const pick = rows.find((r) => r.sequenceNumber >= target) ?? rows[rows.length - 1];
      this.selected = pick.sequenceNumber;
      this.el.setAttribute('aria-activedescendant', `log-${pick.sequenceNumber}`);
      const i = this.index.get(`r${pick.sequenceNumber}`);
      this.el.scrollTop = Math.max(0, this.offsets[i] - (align === 'third' ? this.el.clientHeight / 3 : 0));
    } else if (align === 'bottom') {
      this.el.scrollTop = this.offsets[this.items.length];
    } else {
      this.el.scrollTop = 0;
    }
    this.render();
    this.measure(t0, rows.length);
    this.changed();
  }

  /** Records how long rendering `lines` new logs took (User Timing: `logfleet:render`). */
  measure(t0, lines) {
    // Reading the layout forces it, so the figure includes style and layout of the new rows.
    void this.spacer.offsetHeight;
    const t1 = performance.now();
    performance.measure('logfleet:render', { start: t0, end: t1, detail: { lines } });
    requestAnimationFrame(() => {
      performance.measure('logfleet:render-to-frame', { start: t0, end: performance.now(), detail: { lines } });
    });
  }

  async reset(load) {
    this.gen += 1;
    const gen = this.gen;
    this.resetting = true;
    this.setBusy();
    try {
      const r = await load();
      if (gen !== this.gen) return false;
      this.failed = { before: null, after: null };
      this.setWindow(r.rows, r);
      return true;
    } catch (e) {
      // What was asked for cannot be shown: the window is replaced by the message.
      if (gen === this.gen && !(e && e.name === 'AbortError')) this.opts.onError(e, true);
      return false;
    } finally {
      if (gen === this.gen) {
        this.resetting = false;
        this.setBusy();
      }
    }
  }

  /** Opens at the first matching log. */
  start() {
    return this.reset(async () => {
      const p = await this.opts.fetchPage({ order: 'asc', limit: this.pageSize });
      return { rows: p.logs, atStart: true, atEnd: p.nextCursor === null, align: 'top' };
    });
  }

  /** Opens at the last matching log. */
  end() {
    return this.reset(async () => {
      const p = await this.opts.fetchPage({ order: 'desc', limit: this.pageSize });
      return { rows: p.logs.reverse(), atStart: p.nextCursor === null, atEnd: true, align: 'bottom' };
    });
  }

  /** Opens at `seq` (or the first matching log after it), with logs before it above. */
  jump(seq) {
    return this.reset(async () => {
      const before = seq > 0
        ? this.opts.fetchPage({ order: 'desc', cursor: seq - 1, limit: Math.ceil(this.pageSize / 2) })
        : Promise.resolve({ logs: [], nextCursor: null });
      const [b, a] = await Promise.all([before, this.opts.fetchPage({ order: 'asc', cursor: seq, limit: this.pageSize })]);
      return {
        rows: b.logs.reverse().concat(a.logs),
        atStart: b.nextCursor === null,
        atEnd: a.nextCursor === null,
        target: seq,
      };
    });
  }

  async loadBefore() {
    if (this.loadingBefore || this.resetting || this.atStart || !this.rows.length || this.note) return;
    const first = this.firstSeq();
    if (first === 0) {
      this.atStart = true;
      this.relayout(() => {});
      return;
    }
    const gen = this.gen;
    this.loadingBefore = true;
    this.setBusy();
    try {
      const p = await this.opts.fetchPage({ order: 'desc', cursor: first - 1, limit: this.pageSize });
      if (gen !== this.gen) return;
      const t0 = performance.now();
      const logs = p.logs.reverse().filter((r) => r.sequenceNumber < first);
      this.failed.before = null;
      this.relayout(() => {
        this.rows = logs.concat(this.rows);
        this.atStart = p.nextCursor === null;
        const excess = this.rows.length - this.windowMax;
        if (excess > 0) {
          this.rows.splice(this.rows.length - excess, excess);
          this.atEnd = false;
        }
      });
      this.measure(t0, logs.length);
    } catch (e) {
      if (gen === this.gen) this.failSide('before', e);
    } finally {
      if (gen === this.gen) {
        this.loadingBefore = false;
        this.setBusy();
        this.schedule();
      }
    }
  }

  async loadAfter() {
    if (this.loadingAfter || this.resetting || this.atEnd || !this.rows.length || this.note) return;
    const last = this.lastSeq();
    const gen = this.gen;
    this.loadingAfter = true;
    this.setBusy();
    try {
      const p = await this.opts.fetchPage({ order: 'asc', cursor: last + 1, limit: this.pageSize });
      if (gen !== this.gen) return;
      const t0 = performance.now();
      this.failed.after = null;
      this.appendRows(p.logs, p.nextCursor === null);
      this.measure(t0, p.logs.length);
    } catch (e) {
      if (gen === this.gen) this.failSide('after', e);
    } finally {
      if (gen === this.gen) {
        this.loadingAfter = false;
        this.setBusy();
        this.schedule();
      }
    }
  }

  /** Appends logs after the window (read pages or followed logs); `ended`: nothing after them. */
  appendRows(logs, ended) {
    const last = this.lastSeq() ?? -1;
    const fresh = logs.filter((r) => r.sequenceNumber > last);
    const stick = this.following && this.atBottom();
    this.relayout(() => {
      this.rows = this.rows.concat(fresh);
      if (ended !== undefined) {
        this.atEnd = ended;
        if (ended) this.endCheckedAt = new Date();
      }
      if (this.note && this.rows.length) this.note = null;
      const excess = this.rows.length - this.windowMax;
      if (excess > 0) {
        this.rows.splice(0, excess);
        this.atStart = false;
      }
    });
    if (stick) {
      this.el.scrollTop = this.offsets[this.items.length];
      this.render();
    }
    return fresh.length;
  }

  /** Applies `mutate` to the window, keeping the reader's place. */
  relayout(mutate) {
    const a = this.anchor();
    mutate();
    this.rebuild();
    this.restore(a);
    this.render();
    this.changed();
  }

  /** Shows a message in place of the logs: `{kind: 'empty'|'error'|'info', title, message}`. */
  showNote(note) {
    this.gen += 1;
    this.resetting = false;
    this.loadingBefore = false;
    this.loadingAfter = false;
    this.setBusy();
    this.rows = [];
    this.failed = { before: null, after: null };
    this.note = note;
    this.atStart = true;
    this.atEnd = true;
    this.nodes.clear();
    this.rebuild();
    this.el.scrollTop = 0;
    this.render();
    this.changed();
  }

  changed() {
    if (this.opts.onChange) this.opts.onChange();
  }

  // --- rendering -------------------------------------------------------------------------

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const top = this.el.scrollTop;
    const view = this.el.clientHeight || 600;
    const n = this.items.length;
    const from = Math.max(0, indexAt(this.offsets, top) - OVERSCAN);
    const to = Math.min(n, indexAt(this.offsets, top + view) + OVERSCAN + 1);
    const keep = new Map();
    const children = [];
    for (let i = from; i < to; i += 1) {
      const it = this.items[i];
      const stamp = this.stamp(it);
      let node = this.nodes.get(it.key);
      if (!node || node.stamp !== stamp) {
        node = { el: this.draw(it), stamp };
      }
      node.el.style.top = `${this.offsets[i]}px`;
      keep.set(it.key, node);
      children.push(node.el);
    }
    this.nodes = keep;
    this.spacer.replaceChildren(...children);
    this.fixHeights();
    if (!this.busy()) {
      if (!this.atStart && from < PREFETCH && !this.holding('before')) this.loadBefore();
      if (!this.atEnd && to > n - PREFETCH && !this.holding('after')) this.loadAfter();
    }
  }

  /** What a drawn node depends on besides its key. */
  stamp(it) {
    if (it.kind === 'row') return `${it.row.sequenceNumber === this.selected}|${it.open}|${it.tier.key}`;
    if (it.kind === 'sep') return `${it.tier.key}|${it.tier.label}`;
    if (it.kind === 'edge') return it.text;
    return it.note.title;
  }

  /** Expanded rows are measured once drawn; a different height re-lays out the list. */
  fixHeights() {
    let changed = false;
    for (const [key, node] of this.nodes) {
      const i = this.index.get(key);
      const it = this.items[i];
      if (it.kind !== 'row' || !it.open) continue;
      const real = node.el.offsetHeight;
      if (real && real !== it.height) {
        this.heights.set(it.row.sequenceNumber, real);
        changed = true;
      }
    }
    if (changed) {
      const a = this.anchor();
      this.rebuild();
      this.restore(a);
      for (const [key, node] of this.nodes) {
        const i = this.index.get(key);
        if (i !== undefined) node.el.style.top = `${this.offsets[i]}px`;
      }
    }
  }

  draw(it) {
    if (it.kind === 'edge') {
      return h('div', { class: `edge edge-${it.key}`, 'aria-hidden': 'true', text: it.text });
    }
    if (it.kind === 'note') {
      return h('div', { class: `note note-${it.note.kind}`, role: 'alert' },
        h('strong', {}, it.note.title), h('span', {}, it.note.message));
    }
    if (it.kind === 'sep') {
      return h('div', { class: `sep sep-${it.tier.kind}`, role: 'separator', dataset: { tier: it.tier.key, seq: it.seq }, title: it.tier.title },
        h('span', { class: `tier tier-${it.tier.kind}` }, it.tier.short), ` ${it.tier.label}`);
    }
    const r = it.row;
    const seq = r.sequenceNumber;
    const sel = seq === this.selected;
    const el = h('div', {
      class: `row lv-${r.level}${sel ? ' sel' : ''}${it.open ? ' open' : ''}`,
      id: `log-${seq}`,
      role: 'option',
      'aria-selected': String(sel),
      'aria-expanded': String(it.open),
      dataset: { seq, tier: it.tier.key },
    },
    h('span', { class: 'exp', 'aria-hidden': 'true' }, it.open ? '▾' : '▸'),
    h('span', { class: 'seq' }, String(seq)),
    h('span', { class: 'ts' }, fmtTime(r.timestamp)),
    h('span', { class: 'lvl' }, r.level.toUpperCase()),
    h('span', { class: 'msg' }, r.message),
    r.metadata !== undefined ? h('span', { class: 'meta', title: 'has metadata' }, '{…}') : null,
    h('span', { class: `tier tier-${it.tier.kind}`, title: it.tier.title }, it.tier.short));
    if (it.open) el.append(h('pre', { class: 'detail' }, this.detailText(r)));
    return el;
  }

  // --- selection and keys ----------------------------------------------------------------

  rowIndex(seq) {
    return this.rows.findIndex((r) => r.sequenceNumber === seq);
  }

  /** Selects the log `seq` (loaded) and scrolls it into view. */
  select(seq, { notify = true } = {}) {
    this.selected = seq;
    const i = this.index.get(`r${seq}`);
    if (i !== undefined) {
      const top = this.offsets[i];
      const bottom = this.offsets[i + 1];
      const pad = ROW * 2;
      if (top < this.el.scrollTop + pad) this.el.scrollTop = Math.max(0, top - pad);
      else if (bottom > this.el.scrollTop + this.el.clientHeight - pad) {
        this.el.scrollTop = bottom - this.el.clientHeight + pad;
      }
    }
    this.render();
    this.el.setAttribute('aria-activedescendant', `log-${seq}`);
    if (notify && this.opts.onSelect) this.opts.onSelect(seq);
  }

  toggle(seq) {
    if (this.expanded.has(seq)) this.expanded.delete(seq);
    else this.expanded.add(seq);
    this.relayout(() => {});
  }

  /** Moves the selection by `delta` loaded logs. */
  move(delta) {
    if (!this.rows.length) return;
    let i = this.selected === null ? -1 : this.rowIndex(this.selected);
    if (i < 0) {
      // Nothing selected (or scrolled away from it): start from the first log in view.
      const a = this.anchor();
      i = a ? this.rowIndex(Number(a.key.slice(1))) : 0;
      delta = delta > 0 ? delta - 1 : delta;
    }
    const j = Math.min(this.rows.length - 1, Math.max(0, i + delta));
    this.select(this.rows[j].sequenceNumber);
  }

  onKey(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const pageRows = Math.max(1, Math.floor(this.el.clientHeight / ROW) - 2);
    const keys = {
      ArrowDown: () => this.move(1),
      ArrowUp: () => this.move(-1),
      PageDown: () => this.move(pageRows),
      PageUp: () => this.move(-pageRows),
      Home: () => this.opts.onHome && this.opts.onHome(),
      End: () => this.opts.onEnd && this.opts.onEnd(),
      Enter: () => this.selected !== null && this.toggle(this.selected),
      ' ': () => this.selected !== null && this.toggle(this.selected),
      Escape: () => this.selected !== null && this.expanded.has(this.selected) && this.toggle(this.selected),
    };
    const fn = keys[e.key];
    if (!fn) return;
    e.preventDefault();
    fn();
  }

  onClick(e) {
    const row = e.target.closest('.row');
    if (!row) {
      const sep = e.target.closest('.sep');
      if (sep && this.opts.onSeparator) this.opts.onSeparator(sep.dataset.tier);
      return;
    }
    // A click that ends a text selection only selects text.
    if (String(window.getSelection()).length && !e.target.closest('.exp')) return;
    const seq = Number(row.dataset.seq);
    this.el.focus({ preventScroll: true });
    if (e.target.closest('.exp') || e.detail === 2 || seq === this.selected) this.toggle(seq);
    this.select(seq);
  }

  /** Re-evaluates tiers (after the stats or chunks changed). */
  refreshTiers() {
    this.relayout(() => {});
  }

  /** Text for a status line: what is loaded. */
  describe() {
    if (!this.rows.length) return '';
    return `Showing ${fmtInt(this.rows.length)} loaded logs, sequence ${fmtInt(this.firstSeq())} to ${fmtInt(this.lastSeq())}${this.atEnd ? '' : ' (more below)'}${this.atStart ? '' : ' (more above)'}`;
  }
}

/** Tier descriptions for the separators and tags, from the stats and the chunk list. */
export function tierFinder(getStats, getChunks) {
  return (seq) => {
    const stats = getStats();
    const archived = stats ? stats.archivedLogs : 0;
    if (seq >= archived) {
      return {
        key: 'hot',
        kind: 'hot',
        short: 'HOT',
        label: `Hot: MongoDB, sequence ${fmtInt(archived)} and later`,
        title: 'tier hot (MongoDB)',
      };
    }
    const chunks = getChunks();
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = chunks[mid];
      if (seq < c.startSequence) hi = mid - 1;
      else if (seq > c.endSequence) lo = mid + 1;
      else {
        return {
          key: `c${c.chunkNumber}`,
          kind: 'archived',
          short: `C${c.chunkNumber}`,
          label: `Archived: chunk ${c.chunkNumber}, sequence ${fmtInt(c.startSequence)}–${fmtInt(c.endSequence)}, ${fmtInt(c.logCount)} logs, ${fmtTime(c.startTime)} → ${fmtTime(c.endTime)}, ${fmtBytes(c.sizeBytes)} in S3`,
          title: `tier archived (S3), chunk ${c.chunkNumber}: ${c.src}`,
        };
      }
    }
    return {
      key: 'archived',
      kind: 'archived',
      short: 'ARC',
      label: `Archived: S3, below sequence ${fmtInt(archived)}`,
      title: 'tier archived (S3)',
    };
  };
}
