// The episode list: search by id prefix, sorted by latest log (or by id), with totals, hot and
// archived counts, level counts and time span. State in the hash: #/?prefix=run-&sort=id

import { ApiError, getJson } from './api.js';
import { fmtInt, fmtTime, h, levelBadges, qs, span } from './util.js';

const PAGE = 50;
const SEARCH_DELAY_MS = 250;

export class EpisodesView {
  constructor(root, params) {
    this.root = root;
    this.prefix = params.get('prefix') || '';
    this.sort = params.get('sort') === 'id' ? 'id' : 'lastLogAt';
    this.cursor = null;
    this.shown = 0;
    this.gen = 0;
    this.timer = 0;
    this.build();
    this.load(false);
  }

  build() {
    this.search = h('input', {
      id: 'prefix', type: 'search', value: this.prefix, autocomplete: 'off', spellcheck: 'false',
      'aria-describedby': 'prefix-help', on: { input: () => this.searchSoon() },
    });
    this.sortSel = h('select', { id: 'sort', on: { change: () => this.searchNow() } },
      h('option', { value: 'lastLogAt', selected: this.sort === 'lastLogAt' }, 'Latest log first'),
      h('option', { value: 'id', selected: this.sort === 'id' }, 'Episode id'));
    this.tbody = h('tbody', { on: { keydown: (e) => this.onKey(e) } });
    this.status = h('p', { id: 'list-status', class: 'status', role: 'status' }, 'Loading…');
    this.more = h('button', { type: 'button', id: 'more', hidden: true, on: { click: () => this.load(true) } }, 'Show more episodes');
    this.root.replaceChildren(
      h('h1', {}, 'Episodes'),
      h('form', { class: 'search', role: 'search', on: { submit: (e) => { e.preventDefault(); this.searchNow(); } } },
        h('div', { class: 'field' }, h('label', { for: 'prefix' }, 'Episode id starts with'), this.search,
          h('span', { id: 'prefix-help', class: 'help' }, 'Case-sensitive; empty for all.')),
        h('div', { class: 'field' }, h('label', { for: 'sort' }, 'Sort by'), this.sortSel)),
      this.status,
      h('div', { class: 'table-wrap' },
        h('table', { class: 'grid episodes', id: 'episodes' },
          h('caption', { class: 'sr-only' }, 'Episodes; arrow keys move between rows'),
          h('thead', {}, h('tr', {},
            h('th', { scope: 'col' }, 'Episode'),
            h('th', { scope: 'col' }, 'Last log (UTC)'),
            h('th', { scope: 'col' }, 'Time span'),
            h('th', { scope: 'col', class: 'num' }, 'Logs'),
            h('th', { scope: 'col', class: 'num' }, 'Hot'),
            h('th', { scope: 'col', class: 'num' }, 'Archived'),
            h('th', { scope: 'col' }, 'Levels'))),
          this.tbody)),
      this.more,
    );
  }

  searchSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.searchNow(), SEARCH_DELAY_MS);
  }

  searchNow() {
    clearTimeout(this.timer);
    this.prefix = this.search.value.trim();
    this.sort = this.sortSel.value;
    history.replaceState(null, '', `#/${qs({ prefix: this.prefix, sort: this.sort === 'id' ? 'id' : '' })}`);
    this.load(false);
  }

  async load(more) {
    this.gen += 1;
    const gen = this.gen;
    if (!more) {
      this.cursor = null;
      this.shown = 0;
    }
    this.status.textContent = 'Loading…';
    this.root.setAttribute('aria-busy', 'true');
    try {
      const page = await getJson(`v1/episodes${qs({ prefix: this.prefix, sort: this.sort, cursor: this.cursor, limit: PAGE })}`);
      if (gen !== this.gen) return;
      const rows = page.episodes.map((e) => this.row(e));
      if (more) this.tbody.append(...rows);
      else this.tbody.replaceChildren(...rows);
      this.shown += page.episodes.length;
      this.cursor = page.nextCursor;
      this.more.hidden = page.nextCursor === null;
      const what = this.prefix ? ` whose id starts with “${this.prefix}”` : '';
      this.status.textContent = this.shown === 0
        ? `No episodes${what}.`
        : `${fmtInt(this.shown)} episode${this.shown === 1 ? '' : 's'}${what}${page.nextCursor === null ? '' : ' shown, more below'}.`;
    } catch (e) {
      if (gen !== this.gen) return;
      const d = e instanceof ApiError ? e.describe() : { title: 'Error', message: String(e) };
      this.status.textContent = '';
      this.status.append(h('strong', { class: 'error-text' }, `${d.title}: `), d.message);
    } finally {
      if (gen === this.gen) this.root.setAttribute('aria-busy', 'false');
    }
  }

  row(e) {
    const archived = e.archivedLogs > 0
      ? `${fmtInt(e.archivedLogs)} (${fmtInt(e.totalChunks)} chunk${e.totalChunks === 1 ? '' : 's'})`
      : '0';
    return h('tr', { dataset: { episode: e.episodeId } },
      h('td', {}, h('a', { href: `#/e/${encodeURIComponent(e.episodeId)}`, class: 'ep-link' }, e.episodeId)),
      h('td', {}, fmtTime(e.lastLogAt)),
      h('td', { title: `${fmtTime(e.firstLogAt)} → ${fmtTime(e.lastLogAt)}` }, span(e.firstLogAt, e.lastLogAt)),
      h('td', { class: 'num' }, fmtInt(e.totalLogs)),
      h('td', { class: 'num' }, fmtInt(e.currentLogs)),
      h('td', { class: 'num' }, archived),
      h('td', {}, levelBadges(e.levelCounts) ?? '–'));
  }

  /** Up and down arrows move between the rows' links. */
  onKey(e) {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    const links = [...this.tbody.querySelectorAll('a.ep-link')];
    const i = links.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    const j = Math.min(links.length - 1, Math.max(0, i + (e.key === 'ArrowDown' ? 1 : -1)));
    links[j].focus();
  }

  unmount() {
    this.gen += 1;
    clearTimeout(this.timer);
  }
}
