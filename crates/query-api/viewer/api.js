// The read API as the viewer uses it: JSON pages, the NDJSON follow stream, export downloads,
// the bearer token and the error messages. Every call goes through `request`, which adds the
// token and, on 401, asks the reader for one (once, however many calls wait for it).

const TOKEN_KEY = 'logfleet.viewer.token';

/** An answer of the API that is not a success, or a request that failed on the way. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    /** HTTP status; 0 when the server could not be reached. */
    this.status = status;
    /** The API's error code (`not_found`, `expired`, ...) or `network`. */
    this.code = code;
  }

  /** What to show: a short title and the message. */
  describe() {
    return describeError(this.status, { error: { code: this.code, message: this.message } });
  }
}

/**
 * How the viewer explains an error answer: `status` and the parsed body
 * (`{"error": {"code", "message"}}`, or anything else). Returns `{title, message, code}`.
 * Statuses the API may add later are shown generically with their message.
 */
export function describeError(status, body) {
  const err = (body && typeof body === 'object' && body.error) || {};
  const message = typeof err.message === 'string' && err.message ? err.message : '';
  const code = typeof err.code === 'string' ? err.code : `http_${status}`;
  const titles = {
    0: 'The server cannot be reached',
    400: 'The request was refused',
    401: 'A token is needed',
    403: 'Access denied',
    404: 'Not found',
    410: 'This range has expired',
    429: 'Too many requests',
    503: 'Storage is unavailable',
  };
  let title = titles[status];
  if (!title) title = status >= 500 ? `Server error (HTTP ${status})` : `HTTP ${status}`;
  let text = message || (status === 410
    ? 'These logs were removed by the retention policy.'
    : status === 0 ? 'Check the connection and retry.' : 'No details were given.');
  if (status === 410 && message) text = `${message} (removed by the retention policy)`;
  return { title, message: text, code };
}

/** The token kept for this browser session, or null. */
export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Keeps `t` for this session only (sessionStorage: gone when the tab closes). */
export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let askToken = null;
let asking = null;

/**
 * Installs the function that asks the reader for a token: `(refused: boolean) => Promise<string>`
 * (rejects when the reader gives up).
 */
export function onTokenNeeded(fn) {
  askToken = fn;
}

/** One prompt for every call that got a 401 meanwhile. */
function tokenFromReader(refused) {
  if (!askToken) return Promise.reject(new ApiError(401, 'unauthorized', 'A token is needed.'));
  if (!asking) {
    asking = askToken(refused).then((t) => {
      setToken(t);
      return t;
    }).finally(() => {
      asking = null;
    });
  }
  return asking;
}

/** Resolves `path` ("v1/...") against the page, so the viewer works under a path prefix too. */
export function url(path) {
  return new URL(path, document.baseURI).toString();
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const d = describeError(resp.status, body);
  return new ApiError(resp.status, d.code, (body && body.error && body.error.message) || d.message);
}

/**
 * GET `path` with the token; on 401 asks for a token and retries. Resolves to the Response when
 * it is a success; rejects with an ApiError otherwise (AbortError when `signal` aborts).
 */
export async function request(path, { signal, accept = 'application/json' } = {}) {
  let refused = false;
  for (;;) {
    const headers = { Accept: accept };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    let resp;
    try {
      resp = await fetch(url(path), { headers, signal, cache: 'no-store' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', `${e.message || e}`);
    }
    if (resp.ok) return resp;
    if (resp.status === 401) {
      // A token that was refused is dropped; the reader is asked (again).
      if (t) clearToken();
      refused = refused || Boolean(t);
      await tokenFromReader(refused);
      refused = true;
      continue;
    }
    throw await errorOf(resp);
  }
}

/** GET a JSON document. */
export async function getJson(path, opts) {
  const resp = await request(path, opts);
  return resp.json();
}

/**
 * Reads an NDJSON stream (the follow mode), calling `onBatch(records)` with the records that
 * each network read completed. Resolves when the stream ends; rejects on error or abort.
 */
export async function ndjson(path, { signal, onBatch }) {
  const resp = await request(path, { signal, accept: 'application/x-ndjson' });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += decoder.decode(value, { stream: true });
    const lines = rest.split('\n');
    rest = lines.pop();
    const records = lines.filter((l) => l.trim()).map((l) => JSON.parse(l));
    if (records.length) onBatch(records);
  }
}

/**
 * Downloads `path` (an export) with the token, as the file `filename`: the body is read as a
 * stream into a Blob, then saved through an object URL (a plain link could not carry the
 * token). `onProgress(bytes)` is called as bytes arrive. Resolves to `{bytes, lines}` (lines:
 * newline count, i.e. logs for NDJSON; null for compressed formats).
 */
export async function download(path, filename, { signal, onProgress, countLines } = {}) {
  const resp = await request(path, { signal, accept: '*/*' });
  const reader = resp.body.getReader();
  const parts = [];
  let bytes = 0;
  let lines = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parts.push(value);
    bytes += value.length;
    if (countLines) for (let i = 0; i < value.length; i += 1) if (value[i] === 10) lines += 1;
    if (onProgress) onProgress(bytes);
  }
  const blob = new Blob(parts, { type: resp.headers.get('content-type') || 'application/octet-stream' });
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
  return { bytes, lines: countLines ? lines : null };
}
