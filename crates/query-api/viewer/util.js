// Small helpers shared by the viewer's modules: element building and formatting.

/** The five levels, in order of severity. */
export const LEVELS = ['debug', 'info', 'warn', 'error', 'fatal'];

/**
 * Creates an element. `attrs`: `class`, `text`, `dataset` (object), `on` (event → handler),
 * anything else as an attribute (`false`/`null` leaves it out, `true` sets it empty).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** 1234567 → "1,234,567". */
export function fmtInt(n) {
  return Number(n ?? 0).toLocaleString('en-US');
}

/** Bytes, in B, KB, MB or GB (powers of 1,000, like the figures in the docs). */
export function fmtBytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = Number(n ?? 0);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** An RFC 3339 UTC time from the API as "2026-11-27 18:00:00.123" (UTC, as the API). */
export function fmtTime(iso) {
  if (!iso) return '–';
  return iso.replace('T', ' ').replace(/Z$/, '');
}

/** A duration in milliseconds, roughly: "850 ms", "12.3 s", "4 min 3 s", "2 h 5 min", "3 d 4 h". */
export function fmtDuration(ms) {
  if (!(ms >= 0)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** The span between two RFC 3339 times. */
export function span(first, last) {
  if (!first || !last) return '–';
  return fmtDuration(Date.parse(last) - Date.parse(first));
}

/** Per-level counts as small coloured badges ("E 12"), most severe first; `null` when none. */
export function levelBadges(counts) {
  const present = [...LEVELS].reverse().filter((l) => counts && counts[l] > 0);
  if (!present.length) return null;
  return h('span', { class: 'levels' },
    present.map((l) => h('span', {
      class: `badge lv-${l}`,
      title: `${l}: ${fmtInt(counts[l])}`,
      'aria-label': `${l} ${fmtInt(counts[l])}`,
    }, `${l.toUpperCase()} ${fmtInt(counts[l])}`)));
}

/** Parses the query part of the location hash (`#/e/x?seq=3` → Map). */
export function hashParams(hash) {
  const q = hash.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
}

/** A query string from an object, leaving out empty values ("" when nothing is left). */
export function qs(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === '') continue;
    p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** Resolves after `ms`. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
