// The viewer's entry point: hash routing between the episode list (#/) and one episode
// (#/e/EPISODE?...), and the token dialog (asked once per browser session, when the API says
// 401).

import { onTokenNeeded, token } from './api.js';
import { EpisodeView } from './episode.js';
import { EpisodesView } from './episodes.js';
import { hashParams } from './util.js';

const main = document.getElementById('main');
let view = null;
let viewKey = null;

function route() {
  const hash = location.hash || '#/';
  const path = hash.slice(1).split('?')[0];
  const params = hashParams(hash);
  const m = /^\/e\/([^/]+)$/.exec(path);
  const key = m ? `e:${decodeURIComponent(m[1])}` : 'list';
  if (view && key === viewKey && view.update) {
    view.update(params);
    return;
  }
  if (view) view.unmount();
  viewKey = key;
  if (m) {
    const ep = decodeURIComponent(m[1]);
    document.title = `${ep} · logfleet`;
    view = new EpisodeView(main, ep, params);
  } else {
    document.title = 'Episodes · logfleet';
    view = new EpisodesView(main, params);
  }
  const h1 = main.querySelector('h1');
  if (h1 && document.activeElement === document.body) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
  }
}

/** The token dialog: resolves with what the reader typed, rejects on Cancel. */
function askToken(refused) {
  const dialog = document.getElementById('auth');
  const form = document.getElementById('auth-form');
  const input = document.getElementById('auth-token');
  const msg = document.getElementById('auth-msg');
  msg.textContent = refused
    ? 'That token was refused. Type the bearer token again.'
    : 'This query-api needs a bearer token. It is kept for this browser session only.';
  msg.classList.toggle('error-text', refused);
  input.value = '';
  return new Promise((resolve, reject) => {
    const done = (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (e.submitter && e.submitter.value === 'cancel') {
        cleanup();
        reject(new Error('no token given'));
        return;
      }
      if (!t) return;
      cleanup();
      document.getElementById('auth-state').textContent = 'token kept for this session';
      resolve(t);
    };
    const cancel = () => {
      cleanup();
      reject(new Error('no token given'));
    };
    const cleanup = () => {
      form.removeEventListener('submit', done);
      dialog.removeEventListener('cancel', cancel);
      dialog.close();
    };
    form.addEventListener('submit', done);
    dialog.addEventListener('cancel', cancel);
    dialog.showModal();
    input.focus();
  });
}

onTokenNeeded(askToken);
document.getElementById('auth-state').textContent = token() ? 'token kept for this session' : '';
window.addEventListener('hashchange', route);
route();
