// Boot: who is signed in, the hash router, the top bar.
import { gql, ws, ApiError } from './graphql.js';
import { ME } from './queries.js';
import { h, replace, errorBox, busy } from './ui.js';
import { parseHash, navigate } from './nav.js';
import * as serversPage from './pages/servers.js';
import * as wizardPage from './pages/wizard.js';
import * as buildPage from './pages/build.js';
import * as serverPage from './pages/server.js';
import * as auditPage from './pages/audit.js';
import * as settingsPage from './pages/settings.js';
import * as signInPage from './pages/signin.js';

const main = document.getElementById('main');
const nav = document.getElementById('main-nav');
const account = document.getElementById('account');
const connection = document.getElementById('connection');

export const session = { me: null };

// Routes are hash routes (#/servers/…) so every page works whatever the
// server does with unknown paths, and a reload keeps the build id.
const ROUTES = [
  [/^\/?$/, serversPage, 'servers'],
  [/^\/servers$/, serversPage, 'servers'],
  [/^\/new$/, wizardPage, 'new'],
  [/^\/builds\/([^/]+)$/, buildPage, 'new'],
  [/^\/servers\/([^/]+)(?:\/([a-z-]+))?$/, serverPage, 'servers'],
  [/^\/audit$/, auditPage, 'audit'],
  [/^\/settings$/, settingsPage, 'settings'],
];

let current = null; // { ctx }
let firstRender = true;


async function route() {
  const { path, query } = parseHash();
  if (current) current.ctx.dispose();
  const ctx = makeCtx();
  current = { ctx };

  if (!session.me) {
    nav.hidden = true;
    await signInPage.render(main, ctx, [], query);
    finish(ctx);
    return;
  }
  nav.hidden = false;
  let match = null;
  for (const [re, page, section] of ROUTES) {
    const m = path.match(re);
    if (m) { match = { page, section, params: m.slice(1) }; break; }
  }
  for (const a of nav.querySelectorAll('a[data-nav]')) {
    if (match && a.dataset.nav === match.section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!match) {
    replace(main, h('h1', { tabindex: '-1' }, 'Page not found'),
      h('p', {}, 'There is no page at ', h('code', {}, path), '. ', h('a', { href: '#/servers' }, 'Go to your servers'), '.'));
    document.title = 'Not found · BuildMyMCP';
    finish(ctx);
    return;
  }
  try {
    await match.page.render(main, ctx, match.params, query);
  } catch (e) {
    if (!ctx.alive) return;
    if (e instanceof ApiError && e.code === 'UNAUTHENTICATED') { session.me = null; renderAccount(); route(); return; }
    main.appendChild(errorBox(e, 'This page could not be shown'));
  }
  finish(ctx);
}

function finish(ctx) {
  if (!ctx.alive) return;
  // Move focus to the new page's heading (not on first load, where the
  // browser's own focus handling is expected).
  if (!firstRender) (main.querySelector('h1') || main).focus({ preventScroll: false });
  firstRender = false;
}

function makeCtx() {
  const cleanups = [];
  return {
    alive: true,
    onDispose(fn) { cleanups.push(fn); },
    dispose() {
      this.alive = false;
      while (cleanups.length) { try { cleanups.pop()(); } catch (e) { console.error(e); } }
    },
  };
}

function renderAccount() {
  if (!session.me) { replace(account); return; }
  const err = h('span');
  const btn = h('button', { type: 'button', class: 'secondary small' }, 'Sign out');
  btn.addEventListener('click', () => busy(btn, err, async () => {
    const res = await fetch('/auth/sign-out', { method: 'POST', credentials: 'same-origin', headers: { accept: 'application/json' }, redirect: 'manual' });
    if (!(res.ok || res.type === 'opaqueredirect' || (res.status >= 300 && res.status < 400))) {
      throw new ApiError([{ message: `Signing out failed: the server answered ${res.status}.`, extensions: { code: `HTTP_${res.status}` } }]);
    }
    ws.close();
    session.me = null;
    renderAccount();
    navigate('/', { replace: true });
  }, 'Signing out…'));
  const org = session.me.org;
  replace(account,
    h('span', { class: 'email' }, h('span', { class: 'visually-hidden' }, 'Signed in as '), session.me.email),
    org ? h('span', { class: 'muted' }, `· ${org.name}`) : null,
    btn, err);
}

async function loadMe() {
  try {
    const data = await gql(ME);
    session.me = data.me ? { ...data.me, org: data.org || null } : null;
    return null;
  } catch (e) {
    session.me = null;
    if (e instanceof ApiError && e.code === 'UNAUTHENTICATED') return null;
    return e;
  }
}

async function boot() {
  const err = await loadMe();
  renderAccount();
  if (err) {
    nav.hidden = true;
    const retry = h('button', { type: 'button', onclick: () => location.reload() }, 'Try again');
    replace(main, h('h1', { tabindex: '-1' }, 'The dashboard could not start'), errorBox(err, 'Could not ask the API who you are'), retry);
    return;
  }
  window.addEventListener('hashchange', route);
  route();
}

// The skip link focuses <main> without touching the hash (the hash is the route).
document.querySelector('[data-skip]').addEventListener('click', (e) => { e.preventDefault(); main.focus(); });

ws.onState((state, detail) => {
  if (state === 'reconnecting') connection.textContent = `Live updates interrupted — reconnecting (${detail}).`;
  else if (state === 'failed') connection.textContent = `Live updates stopped: ${detail}`;
  else connection.textContent = '';
});

// For the browser tests: lets them drop the WebSocket to prove the log resumes.
window.__bmm = { ws, session };

boot();
