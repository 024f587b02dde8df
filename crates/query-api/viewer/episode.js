// One episode: its statistics and storage (chunks and tiers), filters, the virtualised log list,
// jumps, live follow, permalinks and downloads. State lives in the location hash:
//   #/e/EPISODE?seq=N&level=warn,error&contains=TEXT&from=T1&to=T2
// (`seq` is the selected line: the permalink). `pageSize` and `window` tune the list.

import { ApiError, download, getJson, ndjson } from './api.js';
import { LogList, tierFinder } from './loglist.js';
import { LEVELS, fmtBytes, fmtInt, fmtTime, h, levelBadges, qs, sleep, span } from './util.js';

const FOLLOW_RETRY_MS = 2000;
const STATS_REFRESH_MS = 5000;

/** The filters and position a location hash describes. */
export function readParams(p) {
  const levels = (p.get('level') || '').split(',').map((s) => s.trim().toLowerCase()).filter((l) => LEVELS.includes(l));
  const seq = p.get('seq');
  const num = (k, d) => {
    const v = Number(p.get(k));
    return Number.isInteger(v) && v > 0 ? v : d;
  };
  return {
    seq: seq !== null && /^\d+$/.test(seq) ? Number(seq) : null,
    levels,
    contains: p.get('contains') || '',
    from: p.get('from') || '',
    to: p.get('to') || '',
    pageSize: Math.min(num('pageSize', 1000), 10000),
    windowMax: num('window', 5000),
  };
}

function filterKey(f) {
  return JSON.stringify([f.levels, f.contains, f.from, f.to]);
}

/** Query parameters of the filters, for the logs and export routes. */
function filterQuery(f) {
  return {
    level: f.levels.join(','),
    contains: f.contains,
    time: f.from || f.to ? `${f.from}..${f.to}` : '',
  };
}

export function hashFor(ep, f, seq) {
  const extra = {};
  if (f.pageSize !== 1000) extra.pageSize = f.pageSize;
  if (f.windowMax !== 5000) extra.window = f.windowMax;
  return `#/e/${encodeURIComponent(ep)}${qs({
    seq: seq ?? '', level: f.levels.join(','), contains: f.contains, from: f.from, to: f.to, ...extra,
  })}`;
}

export class EpisodeView {
  constructor(root, ep, params) {
    this.root = root;
    this.ep = ep;
    this.f = readParams(params);
    this.stats = null;
    this.chunks = [];
    this.following = false;
    this.followAbort = null;
    this.statsTimer = 0;
    this.alive = true;
    /** Settles when the chunk list has been read (or failed). */
    this.chunksReady = Promise.resolve();
    this.base = `v1/episodes/${encodeURIComponent(ep)}`;
    this.build();
    this.list = new LogList(this.viewport, {
      pageSize: this.f.pageSize,
      windowMax: this.f.windowMax,
      // A page is shown once the chunk list is in (read at the same time), so that every line
      // is tagged with its chunk from the first paint.
      fetchPage: async (q) => {
        const page = await getJson(`${this.base}/logs${qs({ ...q, ...filterQuery(this.f) })}`);
        await this.chunksReady;
        return page;
      },
      tierOf: tierFinder(() => this.stats, () => this.chunks),
      onSelect: (seq) => this.selected(seq),
      onError: (e, replaced) => this.error(e, replaced),
      describe: (e) => this.describe(e),
      onChange: () => this.listChanged(),
      onHome: () => this.goStart(),
      onEnd: () => this.goEnd(),
      onSeparator: () => {},
    });
    this.load();
  }

  // --- layout ----------------------------------------------------------------------------

  build() {
    const f = this.f;
    this.statsEl = h('dl', { class: 'stats' });
    this.bar = h('div', { class: 'tierbar', 'aria-hidden': 'true' });
    this.chunkTable = h('tbody');
    this.chunkSummary = h('summary', {}, 'Chunks');
    const levelBoxes = LEVELS.map((l) => h('label', { class: `check lv-${l}` },
      h('input', { type: 'checkbox', name: 'level', value: l, checked: f.levels.includes(l) }), ` ${l}`));
    this.filterForm = h('form', { class: 'filters', 'aria-label': 'Filters', on: { submit: (e) => this.applyFilters(e) } },
      h('fieldset', { class: 'levels-field' }, h('legend', {}, 'Levels'), levelBoxes),
      h('div', { class: 'field' }, h('label', { for: 'f-contains' }, 'Message contains (case-sensitive)'),
        h('input', { id: 'f-contains', name: 'contains', type: 'search', value: f.contains, autocomplete: 'off' })),
      h('div', { class: 'field' }, h('label', { for: 'f-from' }, 'From (UTC, RFC 3339 or epoch ms)'),
        h('input', { id: 'f-from', name: 'from', value: f.from, placeholder: '2026-11-27T18:00:00Z', autocomplete: 'off' })),
      h('div', { class: 'field' }, h('label', { for: 'f-to' }, 'To (excluded)'),
        h('input', { id: 'f-to', name: 'to', value: f.to, placeholder: '2026-11-27T19:00:00Z', autocomplete: 'off' })),
      h('div', { class: 'buttons' },
        h('button', { type: 'submit', id: 'f-apply' }, 'Apply filters'),
        h('button', { type: 'button', id: 'f-clear', on: { click: () => this.clearFilters() } }, 'Clear')));
    this.gotoInput = h('input', { id: 'goto', name: 'goto', autocomplete: 'off', placeholder: 'sequence number or time' });
    this.followBtn = h('button', { type: 'button', id: 'follow', 'aria-pressed': 'false', on: { click: () => this.toggleFollow() } }, 'Follow');
    this.followState = h('span', { id: 'follow-state', class: 'pill', role: 'status', dataset: { state: 'off' } }, 'Live: off');
    this.format = h('select', { id: 'dl-format', 'aria-label': 'Download format' },
      h('option', { value: 'ndjson' }, 'NDJSON'), h('option', { value: 'jsonl.gz' }, 'JSONL.gz'));
    this.dlFiltered = h('button', { type: 'button', id: 'dl-filtered', on: { click: () => this.download(true) } }, 'Download filtered');
    this.toolbar = h('div', { class: 'toolbar' },
      h('form', { class: 'goto', on: { submit: (e) => this.goto(e) } },
        h('label', { for: 'goto' }, 'Go to'), this.gotoInput, h('button', { type: 'submit' }, 'Go')),
      h('div', { class: 'group', role: 'group', 'aria-label': 'Position' },
        h('button', { type: 'button', id: 'go-start', on: { click: () => this.goStart() } }, 'Start'),
        h('button', { type: 'button', id: 'go-end', on: { click: () => this.goEnd() } }, 'End')),
      h('div', { class: 'group', role: 'group', 'aria-label': 'Live follow' }, this.followBtn, this.followState),
      h('div', { class: 'group', role: 'group', 'aria-label': 'Download' }, this.format,
        h('button', { type: 'button', id: 'dl-all', on: { click: () => this.download(false) } }, 'Download episode'),
        this.dlFiltered),
      h('button', { type: 'button', id: 'copy-link', on: { click: () => this.copyLink() } }, 'Copy link'));
    this.status = h('p', { id: 'ep-status', class: 'status', role: 'status' });
    this.alert = h('div', { id: 'ep-alert', class: 'alert', role: 'alert' });
    this.viewport = h('div', {
      class: 'viewport', id: 'logs', tabindex: '0', role: 'listbox', 'aria-label': `Logs of ${this.ep}`, 'aria-busy': 'true',
    });
    this.root.replaceChildren(
      h('nav', { class: 'crumbs' }, h('a', { href: '#/', id: 'back' }, '← Episodes')),
      h('header', { class: 'ep-head' }, h('h1', {}, h('span', { class: 'sr-only' }, 'Episode '), this.ep), this.statsEl),
      h('section', { class: 'storage', 'aria-label': 'Storage' }, this.bar,
        h('details', { class: 'chunks', on: { toggle: (e) => { if (e.target.open) this.drawChunkTable(); } } }, this.chunkSummary,
          h('table', { class: 'grid' },
            h('thead', {}, h('tr', {}, ['Chunk', 'Sequence', 'Logs', 'Time span (UTC)', 'Size', 'S3 key', ''].map((t) => h('th', { scope: 'col' }, t)))),
            this.chunkTable))),
      this.filterForm,
      this.toolbar,
      this.alert,
      this.status,
      h('div', { class: 'logview' },
        h('div', { class: 'cols', 'aria-hidden': 'true' },
          h('span', { class: 'exp' }), h('span', { class: 'seq' }, 'Seq'), h('span', { class: 'ts' }, 'Time (UTC)'),
          h('span', { class: 'lvl' }, 'Level'), h('span', { class: 'msg' }, 'Message'), h('span', { class: 'tier' }, 'Tier')),
        this.viewport),
      h('p', { class: 'hint' }, 'Keys in the list: ↑ ↓ move, Page Up/Down, Home/End go to the start/end, Enter or Space shows the metadata, Escape hides it.'),
    );
    this.dlFiltered.disabled = !this.hasFilters();
  }

  hasFilters() {
    const f = this.f;
    return Boolean(f.levels.length || f.contains || f.from || f.to);
  }

  // --- data ------------------------------------------------------------------------------

  async load() {
    try {
      await this.refreshStats();
    } catch (e) {
      this.fatal(e);
      return;
    }
    if (!this.alive) return;
    this.chunksReady = this.loadChunks();
    if (this.stats.totalLogs === 0) {
      this.list.showNote({ kind: 'empty', title: 'This episode has no logs yet.', message: 'Press Follow to watch for its first logs.' });
      return;
    }
    if (this.f.seq !== null) await this.list.jump(this.f.seq);
    else await this.list.start();
  }

  async refreshStats() {
    const s = await getJson(`${this.base}/stats`);
    const before = this.stats;
    this.stats = s;
    this.drawStats();
    if (before && (before.archivedLogs !== s.archivedLogs || before.totalChunks !== s.totalChunks)) {
      await this.loadChunks();
    }
  }

  async loadChunks() {
    const all = [];
    let cursor = null;
    try {
      do {
        const p = await getJson(`${this.base}/chunks${qs({ limit: 1000, cursor })}`);
        all.push(...p.chunks);
        cursor = p.nextCursor;
      } while (cursor !== null && this.alive);
    } catch (e) {
      this.error(e);
      return;
    }
    this.chunks = all;
    this.drawChunks();
    this.list.refreshTiers();
  }

  drawStats() {
    const s = this.stats;
    const row = (dt, dd, id) => [h('div', {}, h('dt', {}, dt), h('dd', { id }, dd))];
    this.statsEl.replaceChildren(
      ...row('Logs', fmtInt(s.totalLogs), 'st-total'),
      ...row('Hot (MongoDB)', fmtInt(s.currentLogs), 'st-hot'),
      ...row('Archived (S3)', `${fmtInt(s.archivedLogs)} in ${fmtInt(s.totalChunks)} chunks, ${fmtBytes(s.archivedS3Bytes)}`, 'st-archived'),
      ...row('Time span (UTC)', s.firstLogAt ? `${fmtTime(s.firstLogAt)} → ${fmtTime(s.lastLogAt)} (${span(s.firstLogAt, s.lastLogAt)})` : '–', 'st-span'),
      ...row('Levels', levelBadges(s.levelCounts) ?? '–', 'st-levels'),
      ...(s.isArchiving ? row('Archiving', 'an archive run is in progress', 'st-archiving') : []),
    );
  }

  drawChunks() {
    const s = this.stats;
    const total = Math.max(1, s.totalLogs);
    // Widths through the CSSOM (flex-grow by share of the logs): the page's CSP allows no
    // style attributes.
    const seg = (cls, n, label, title, seq) => {
      const el = h('span', { class: `seg ${cls}`, title, on: { click: () => this.jumpTo(seq) } }, label);
      el.style.flexGrow = String(Math.max(1, Math.round((1000 * n) / total)));
      return el;
    };
    const segs = this.chunks.map((c) => seg('archived', c.logCount, `C${c.chunkNumber}`,
      `chunk ${c.chunkNumber}: ${c.startSequence}–${c.endSequence}`, c.startSequence));
    if (s.currentLogs > 0) segs.push(seg('hot', s.currentLogs, 'HOT', `hot: ${s.archivedLogs} and later`, s.archivedLogs));
    this.bar.replaceChildren(...segs);
    this.chunkSummary.textContent = `Chunks: ${fmtInt(this.chunks.length)} archived, then ${fmtInt(s.currentLogs)} hot logs`;
    this.chunkTableDrawn = false;
    if (this.chunkSummary.parentElement.open) this.drawChunkTable();
  }

  /** The chunk table, drawn when first opened (an episode may have thousands of chunks). */
  drawChunkTable() {
    if (this.chunkTableDrawn) return;
    this.chunkTableDrawn = true;
    this.chunkTable.replaceChildren(...this.chunks.map((c) => h('tr', {},
      h('td', {}, String(c.chunkNumber)),
      h('td', {}, `${fmtInt(c.startSequence)}–${fmtInt(c.endSequence)}`),
      h('td', { class: 'num' }, fmtInt(c.logCount)),
      h('td', {}, `${fmtTime(c.startTime)} → ${fmtTime(c.endTime)}`),
      h('td', { class: 'num' }, fmtBytes(c.sizeBytes)),
      h('td', { class: 'key' }, c.src),
      h('td', {}, h('button', { type: 'button', on: { click: () => this.jumpTo(c.startSequence) } }, `Go to chunk ${c.chunkNumber}`)))));
  }

  // --- messages --------------------------------------------------------------------------

  describe(e) {
    if (e instanceof ApiError) return e.describe();
    return { title: 'Something went wrong', message: String((e && e.message) || e) };
  }

  /** The episode itself cannot be shown (unknown, refused): say so in place of the logs. */
  fatal(e) {
    const d = this.describe(e);
    const notFound = e instanceof ApiError && e.status === 404;
    this.list.showNote({
      kind: 'error',
      title: notFound ? `Episode “${this.ep}” was not found.` : d.title,
      message: notFound ? 'Check the id, or pick an episode from the list.' : d.message,
    });
    this.statsEl.replaceChildren();
    for (const el of this.root.querySelectorAll('.toolbar button, .toolbar input, .toolbar select, .filters button')) el.disabled = true;
  }

  /** An error while reading: in place of the logs when none can be shown (`replace`), else above
   * them. */
  error(e, replace = false) {
    if (e && e.name === 'AbortError') return;
    const d = this.describe(e);
    if (replace || !this.list.rows.length) {
      this.list.showNote({ kind: 'error', title: d.title, message: d.message });
    }
    this.alert.replaceChildren(h('strong', {}, `${d.title}: `), d.message);
  }

  clearAlert() {
    this.alert.replaceChildren();
  }

  listChanged() {
    this.status.textContent = this.list.describe();
  }

  // --- navigation ------------------------------------------------------------------------

  selected(seq) {
    this.f.seq = seq;
    history.replaceState(null, '', hashFor(this.ep, this.f, seq));
  }

  async jumpTo(seq) {
    this.clearAlert();
    if (this.following) this.pause();
    await this.list.jump(seq);
    if (this.list.selected !== null) this.selected(this.list.selected);
    this.viewport.focus({ preventScroll: true });
  }

  async goStart() {
    this.clearAlert();
    if (this.following) this.pause();
    await this.list.start();
  }

  async goEnd() {
    this.clearAlert();
    await this.list.end();
  }

  async goto(e) {
    e.preventDefault();
    const raw = this.gotoInput.value.trim();
    if (!raw) return;
    if (/^\d+$/.test(raw) && Number(raw) < 1e11) {
      await this.jumpTo(Number(raw));
      return;
    }
    // A time: the first matching log at or after it.
    try {
      const q = filterQuery(this.f);
      q.time = `${raw}..${this.f.to}`;
      const p = await getJson(`${this.base}/logs${qs({ ...q, order: 'asc', limit: 1 })}`);
      if (!p.logs.length) {
        this.alert.replaceChildren(h('strong', {}, 'Nothing there: '), `no matching log at or after ${raw}.`);
        return;
      }
      await this.jumpTo(p.logs[0].sequenceNumber);
    } catch (err) {
      this.error(err);
    }
  }

  readForm() {
    const fd = new FormData(this.filterForm);
    return {
      ...this.f,
      levels: fd.getAll('level'),
      contains: String(fd.get('contains') || ''),
      from: String(fd.get('from') || '').trim(),
      to: String(fd.get('to') || '').trim(),
    };
  }

  applyFilters(e) {
    e.preventDefault();
    const next = this.readForm();
    // Keep the place: the selected line, else the first in view.
    const a = this.list.anchor();
    const seq = this.list.selected ?? (a ? Number(a.key.slice(1)) : null);
    location.hash = hashFor(this.ep, next, seq);
  }

  clearFilters() {
    this.filterForm.reset();
    for (const el of this.filterForm.querySelectorAll('input')) {
      if (el.type === 'checkbox') el.checked = false;
      else el.value = '';
    }
    const a = this.list.anchor();
    const seq = this.list.selected ?? (a ? Number(a.key.slice(1)) : null);
    location.hash = hashFor(this.ep, { ...this.f, levels: [], contains: '', from: '', to: '' }, seq);
  }

  /** The hash changed for this episode (filters applied, back/forward, an edited link). */
  update(params) {
    const next = readParams(params);
    const refilter = filterKey(next) !== filterKey(this.f);
    const moved = next.seq !== null && next.seq !== this.list.selected;
    if (!refilter && !moved) return;
    const wasFollowing = this.following;
    if (wasFollowing) this.pause();
    this.f = next;
    this.dlFiltered.disabled = !this.hasFilters();
    this.clearAlert();
    if (!this.stats || this.stats.totalLogs === 0) {
      if (wasFollowing) this.toggleFollow();
      return;
    }
    const done = next.seq !== null ? this.list.jump(next.seq) : this.list.start();
    done.then(() => {
      if (this.list.selected !== null) this.selected(this.list.selected);
      if (wasFollowing) this.toggleFollow();
    });
  }

  // --- follow ----------------------------------------------------------------------------

  setFollowState(state, text) {
    this.followState.dataset.state = state;
    this.followState.textContent = text;
    this.followBtn.setAttribute('aria-pressed', String(this.following));
    this.followBtn.textContent = this.following ? 'Pause' : 'Follow';
  }

  toggleFollow() {
    if (this.following) this.pause();
    else this.follow();
  }

  pause() {
    this.following = false;
    this.list.following = false;
    if (this.followAbort) this.followAbort.abort();
    this.followAbort = null;
    clearInterval(this.statsTimer);
    this.setFollowState('paused', 'Paused');
    this.list.relayout(() => {});
  }

  async follow() {
    this.following = true;
    this.list.following = true;
    this.setFollowState('connecting', 'Connecting…');
    this.statsTimer = setInterval(() => this.refreshStats().catch(() => {}), STATS_REFRESH_MS);
    const empty = !this.stats || this.stats.totalLogs === 0;
    if (!empty && !this.list.atEnd) await this.list.end();
    if (!this.following) return;
    this.list.el.scrollTop = this.list.offsets[this.list.items.length];
    this.list.relayout(() => {});
    while (this.following && this.alive) {
      const ctrl = new AbortController();
      this.followAbort = ctrl;
      // From the log after the last one shown: nothing is skipped, nothing repeated.
      const last = this.list.lastSeq();
      const cursor = last === null ? 0 : last + 1;
      try {
        this.setFollowState('following', 'Following');
        await ndjson(`${this.base}/logs${qs({ follow: 'true', cursor, ...filterQuery(this.f) })}`, {
          signal: ctrl.signal,
          onBatch: (records) => {
            const n = this.list.appendRows(records, true);
            if (n && this.stats) {
              this.stats.totalLogs = Math.max(this.stats.totalLogs, this.list.lastSeq() + 1);
            }
          },
        });
      } catch (e) {
        if (e.name === 'AbortError' || !this.following) break;
        const d = this.describe(e);
        this.setFollowState('retrying', `Reconnecting: ${d.title}`);
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          this.error(e);
          this.following = false;
          this.list.following = false;
          clearInterval(this.statsTimer);
          this.setFollowState('off', 'Live: off');
          break;
        }
      }
      if (!this.following) break;
      this.setFollowState('retrying', 'Reconnecting…');
      await sleep(FOLLOW_RETRY_MS);
    }
  }

  // --- download and links ----------------------------------------------------------------

  async download(filtered) {
    const fmt = this.format.value;
    const q = filtered ? filterQuery(this.f) : {};
    const name = `${this.ep}${filtered ? '-filtered' : ''}.${fmt}`;
    const out = h('span', { id: 'dl-status' }, `Downloading ${name}…`);
    this.status.replaceChildren(out);
    try {
      const r = await download(`${this.base}/export${qs({ format: fmt, order: 'asc', ...q })}`, name, {
        countLines: fmt === 'ndjson',
        onProgress: (b) => { out.textContent = `Downloading ${name}: ${fmtBytes(b)}…`; },
      });
      out.textContent = `Saved ${name}: ${r.lines !== null ? `${fmtInt(r.lines)} logs, ` : ''}${fmtBytes(r.bytes)}`;
      out.dataset.lines = r.lines ?? '';
      out.dataset.bytes = r.bytes;
    } catch (e) {
      out.textContent = `Download failed: ${this.describe(e).message}`;
    }
  }

  async copyLink() {
    const link = location.href;
    try {
      await navigator.clipboard.writeText(link);
      this.status.textContent = 'Link to this line copied.';
    } catch {
      this.status.textContent = `Link to this line: ${link}`;
    }
  }

  unmount() {
    this.alive = false;
    this.following = false;
    if (this.followAbort) this.followAbort.abort();
    clearInterval(this.statsTimer);
  }
}
