// Build progress (wizard step 3 and any later build): each step's state and
// the log, streamed over `buildEvents(buildId, after)`. The build id is in the
// URL and the lines seen so far (with the last seq) in sessionStorage, so a
// reload or a dropped connection resumes `after: lastSeq` — no gap, no
// duplicate (lines are also de-duplicated by seq).
import { gql, ws } from '../graphql.js';
import { BUILD, BUILD_EVENTS, BUILD_EVENTS_SUB, SERVER_BRIEF, CANCEL_BUILD } from '../queries.js';
import { h, replace, pageHead, loading, errorBox, badge, busy, timeEl, shortTime, urlWithCopy, confirmDialog } from '../ui.js';
import { stepsIndicator } from './wizard.js';
import { installSnippets, loadSnippets } from './install.js';

export const STEP_NAMES = ['generate', 'check', 'bundle', 'deploy', 'smoke', 'cutover'];
const TERMINAL = { BUILD_SUCCEEDED: 'SUCCEEDED', BUILD_FAILED: 'FAILED', BUILD_CANCELLED: 'CANCELLED' };
const STEP_FROM_KIND = { STEP_STARTED: 'running', STEP_SUCCEEDED: 'succeeded', STEP_FAILED: 'failed', STEP_RETRYING: 'retrying' };
const MAX_CACHED = 5000;

function cacheKey(id) { return `bmm.build.${id}`; }
function loadCache(id) {
  try {
    const c = JSON.parse(sessionStorage.getItem(cacheKey(id)));
    return c && Array.isArray(c.events) ? c.events : [];
  } catch { return []; }
}
function saveCache(id, events) {
  try {
    if (events.length > MAX_CACHED) { sessionStorage.removeItem(cacheKey(id)); return; }
    sessionStorage.setItem(cacheKey(id), JSON.stringify({ events }));
  } catch { /* storage full: a reload replays from the start instead */ }
}

export async function render(main, ctx, [buildId]) {
  const head = pageHead('Building your server');
  const top = h('div', {}, loading('Loading the build…'));
  replace(main, head, top);

  let build;
  try {
    build = (await gql(BUILD, { id: buildId })).build;
  } catch (e) {
    if (!ctx.alive) return;
    if (e.code === 'UNAUTHENTICATED') throw e;
    replace(top, errorBox(e, 'Could not load this build'));
    return;
  }
  if (!ctx.alive) return;
  if (!build) { replace(top, errorBox({ message: 'There is no build with this id in your organization.', errors: [{ message: 'There is no build with this id in your organization.', extensions: { code: 'NOT_FOUND' } }] })); return; }

  const isFirstVersion = (build.version ?? 1) <= 1;
  let fromWizard = false;
  try { fromWizard = sessionStorage.getItem('bmm.wizard.build') === buildId; } catch { /* private mode */ }
  if (!isFirstVersion) head.querySelector('h1').textContent = `Building version ${build.version}`;
  document.title = `${head.querySelector('h1').textContent} · BuildMyMCP`;

  // --- state
  let status = String(build.status || 'QUEUED').toUpperCase();
  const steps = new Map(STEP_NAMES.map((n) => [n, { name: n, status: 'pending', attempts: 0 }]));
  for (const s of build.steps || []) steps.set(s.name, { ...steps.get(s.name), ...s, status: String(s.status || 'pending').toLowerCase() });
  const seen = new Map(); // seq -> event
  let lastSeq = null;

  // --- elements
  const statusLine = h('p', { role: 'status', id: 'build-status', 'aria-live': 'polite' });
  const stepList = h('ol', { class: 'build-steps', id: 'build-steps', 'aria-label': 'Build steps' });
  const log = h('ol', { class: 'log', id: 'build-log', role: 'log', 'aria-label': 'Build log', 'aria-live': 'polite', tabindex: '0' });
  const streamErr = h('div');
  const outcome = h('div', { id: 'build-outcome' });
  const cancelErr = h('div');
  const cancelBtn = h('button', { type: 'button', class: 'secondary', id: 'cancel-build' }, 'Cancel build');
  cancelBtn.addEventListener('click', async () => {
    if (!(await confirmDialog('Cancel this build?', h('p', {}, 'The build stops; the server keeps running its current version, if it has one.'), 'Cancel build', { danger: true }))) return;
    busy(cancelBtn, cancelErr, async () => { await gql(CANCEL_BUILD, { id: buildId }); }, 'Cancelling…');
  });

  let server = { id: build.serverId };
  let serverErr = null;
  try { server = (await gql(SERVER_BRIEF, { id: build.serverId })).server || server; } catch (e) {
    serverErr = errorBox(e, 'Could not load the server of this build');
  }
  if (!ctx.alive) return;
  replace(top,
    fromWizard ? stepsIndicator(2) : null,
    serverErr,
    h('section', { class: 'card', 'aria-labelledby': 'b-h' },
      h('h2', { id: 'b-h', class: 'visually-hidden' }, 'Summary'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Server'), h('dd', {}, server.id ? h('a', { href: `#/servers/${encodeURIComponent(server.id)}` }, server.name || server.slug) : '—'),
        h('dt', {}, 'Version'), h('dd', {}, String(build.version ?? '—')),
        h('dt', {}, 'Started'), h('dd', {}, timeEl(build.createdAt)),
        h('dt', {}, 'Workflow'), h('dd', {}, build.temporalUrl ? h('a', { href: build.temporalUrl, target: '_blank', rel: 'noopener' }, 'Open in the Temporal Web UI') : '—'),
        // The OpenTelemetry trace of the request that started the build (when traces are exported).
        h('dt', {}, 'Trace'), h('dd', {}, build.traceId ? h('code', {}, build.traceId) : '—')),
      statusLine,
      h('div', { class: 'actions' }, cancelBtn),
      cancelErr),
    h('section', { 'aria-labelledby': 'steps-h' }, h('h2', { id: 'steps-h' }, 'Steps'), stepList),
    h('section', { 'aria-labelledby': 'log-h' }, h('h2', { id: 'log-h' }, 'Log'), streamErr, log),
    outcome);

  function renderSteps() {
    replace(stepList, STEP_NAMES.map((n) => {
      const s = steps.get(n);
      return h('li', { dataset: { step: n, status: s.status } },
        h('span', { class: 'step-name' }, n),
        badge(s.status),
        s.attempts > 1 ? h('span', { class: 'step-meta' }, `attempt ${s.attempts}`) : null,
        s.finishedAt && s.startedAt ? h('span', { class: 'step-meta' }, `${Math.max(0, (new Date(s.finishedAt) - new Date(s.startedAt)) / 1000).toFixed(1)} s`) : null);
    }));
  }

  function renderStatus() {
    // Steps may run side by side (deploy beside the type check).
    const running = [...steps.values()].filter((s) => s.status === 'running' || s.status === 'retrying')
      .map((s) => `${s.name}${s.status === 'retrying' ? ' (retrying)' : ''}`);
    const words = {
      QUEUED: 'Queued: waiting for a worker.',
      RUNNING: running.length ? `Running: ${running.join(', ')}.` : 'Running.',
      SUCCEEDED: 'Succeeded: the server is live.',
      FAILED: 'Failed.',
      CANCELLED: 'Cancelled.',
    };
    replace(statusLine, 'Status: ', badge(status), ' ', words[status] || '');
    const v = isFirstVersion ? 'your server' : `version ${build.version}`;
    const titles = { SUCCEEDED: `Built ${v}`, FAILED: `The build of ${v} failed`, CANCELLED: `The build of ${v} was cancelled` };
    const h1 = head.querySelector('h1');
    const text = titles[status] || (isFirstVersion ? 'Building your server' : `Building version ${build.version}`);
    if (h1.textContent !== text) { h1.textContent = text; document.title = `${text} · BuildMyMCP`; }
    statusLine.dataset.status = status;
    cancelBtn.hidden = !(status === 'QUEUED' || status === 'RUNNING');
  }

  function addEvent(ev) {
    if (typeof ev.seq !== 'number' || seen.has(ev.seq)) return; // de-duplicate by seq
    seen.set(ev.seq, ev);
    if (lastSeq === null || ev.seq > lastSeq) lastSeq = ev.seq;
    const kind = String(ev.kind || 'LOG').toUpperCase();
    const li = h('li', { class: kind.toLowerCase(), dataset: { seq: ev.seq, kind } },
      h('span', { class: 'seq', title: shortTime(ev.at) }, String(ev.seq)),
      h('span', { class: 'step' }, ev.step || ''),
      h('span', { class: 'msg' }, ev.message));
    // Keep order by seq even if a line ever arrives out of order.
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
    let before = null;
    for (let n = log.lastElementChild; n && Number(n.dataset.seq) > ev.seq; n = n.previousElementSibling) before = n;
    log.insertBefore(li, before);
    if (stick) log.scrollTop = log.scrollHeight;

    if (STEP_FROM_KIND[kind] && steps.has(ev.step)) {
      const s = steps.get(ev.step);
      s.status = STEP_FROM_KIND[kind];
      if (kind === 'STEP_STARTED') { s.attempts = Math.max(1, s.attempts || 0); s.startedAt = s.startedAt || ev.at; }
      if (kind === 'STEP_SUCCEEDED' || kind === 'STEP_FAILED') s.finishedAt = ev.at;
      if (kind === 'STEP_RETRYING') s.attempts = (s.attempts || 1) + 1;
    }
    if (TERMINAL[kind]) {
      status = TERMINAL[kind];
      // What still ran when the build ended was stopped (as the API reports it).
      for (const s of steps.values()) if (s.status === 'running' || s.status === 'retrying') s.status = 'stopped';
    }
    else if (status === 'QUEUED') status = 'RUNNING';
  }

  for (const ev of loadCache(buildId)) addEvent(ev);
  renderSteps();
  renderStatus();
  if (!seen.size) log.appendChild(h('li', { class: 'empty-line', id: 'log-waiting' }, 'Waiting for the first line…'));

  let ended = false;
  let persistTimer = null;
  const persist = () => {
    clearTimeout(persistTimer);
    persistTimer = setTimeout(() => saveCache(buildId, [...seen.values()].sort((a, b) => a.seq - b.seq)), 150);
  };

  async function finished() {
    if (ended || !ctx.alive) return;
    ended = true;
    saveCache(buildId, [...seen.values()].sort((a, b) => a.seq - b.seq));
    try {
      const fresh = (await gql(BUILD, { id: buildId })).build;
      if (!ctx.alive) return;
      status = String(fresh.status || status).toUpperCase();
      for (const s of fresh.steps || []) steps.set(s.name, { ...steps.get(s.name), ...s, status: String(s.status || 'pending').toLowerCase() });
      renderSteps();
      renderStatus();
      if (status === 'SUCCEEDED') await showLive(server);
      else if (status === 'FAILED') replace(outcome, h('div', { class: 'error-box', role: 'alert' }, h('strong', {}, 'The build failed'), fresh.error || 'See the log above for the step that failed and why.'),
        server.id ? h('p', {}, h('a', { href: `#/servers/${encodeURIComponent(server.id)}` }, 'Go to the server page'), ' to change the description, set secrets or retry.') : null);
      else if (status === 'CANCELLED') replace(outcome, h('p', { class: 'notice' }, 'The build was cancelled.'));
    } catch (e) {
      if (ctx.alive) replace(outcome, errorBox(e, 'Could not load how the build ended'));
    }
  }

  async function showLive(srv) {
    replace(outcome, h('section', { class: 'card', 'aria-labelledby': 'live-h', id: 'server-live' },
      h('h2', { id: 'live-h' }, 'Your server is live'), loading('Loading the install snippets…')));
    let inst = null;
    try { inst = await loadSnippets(srv); } catch (e) {
      if (ctx.alive) outcome.querySelector('section').lastChild.replaceWith(errorBox(e, 'Could not load the install snippets'));
      return;
    }
    if (!ctx.alive) return;
    replace(outcome, h('section', { class: 'card', 'aria-labelledby': 'live-h', id: 'server-live' },
      h('h2', { id: 'live-h' }, 'Your server is live'),
      h('p', {}, 'Connect any MCP client to this URL; it signs in with OAuth the first time.'),
      h('p', {}, urlWithCopy(inst.url || srv.url, 'Copy URL')),
      h('p', {}, h('a', { href: `#/servers/${encodeURIComponent(srv.id)}` }, 'Open the server page'), ' for its tools, logs, versions and secrets.'),
      installSnippets(inst.snippets, 'h3')));
  }

  // While the WebSocket is down (a proxy that refuses upgrades, a flaky
  // network), the same events are fetched over HTTP; seq de-duplicates.
  let pollTimer = null;
  let polling = false;
  async function pollOnce() {
    if (polling || ended || !ctx.alive || ws.state === 'connected') return;
    polling = true;
    try {
      const b = (await gql(BUILD_EVENTS, { id: buildId, after: lastSeq, limit: 150 })).build; // 150 × 5 fields stays under the API's complexity limit
      if (!ctx.alive || !b) return;
      document.getElementById('log-waiting')?.remove();
      let terminal = false;
      for (const ev of b.events || []) { addEvent(ev); if (TERMINAL[String(ev.kind).toUpperCase()]) terminal = true; }
      renderSteps();
      renderStatus();
      persist();
      if (terminal) { if (unsubscribe) unsubscribe(); finished(); }
    } catch (e) {
      console.warn('polling build events:', e.message);
    } finally { polling = false; }
  }
  const stopState = ws.onState((state) => {
    clearInterval(pollTimer);
    if (state === 'reconnecting' || state === 'failed') pollTimer = setInterval(pollOnce, 3000);
  });
  ctx.onDispose(() => { stopState(); clearInterval(pollTimer); });

  let unsubscribe = null;
  function subscribe() {
    replace(streamErr);
    unsubscribe = ws.subscribe(
      () => ({ query: BUILD_EVENTS_SUB, variables: { buildId, after: lastSeq } }),
      {
        next: (data) => {
          const ev = data.buildEvents;
          if (!ev) return;
          document.getElementById('log-waiting')?.remove();
          addEvent(ev);
          renderSteps();
          renderStatus();
          persist();
          if (TERMINAL[String(ev.kind).toUpperCase()]) finished();
        },
        error: (e) => {
          if (!ctx.alive) return;
          const retry = h('button', { type: 'button', class: 'secondary small', onclick: () => { if (unsubscribe) unsubscribe(); subscribe(); } }, 'Reconnect');
          replace(streamErr, errorBox(e, 'The live log stopped'), retry);
        },
        complete: () => { if (ctx.alive) finished(); },
      });
  }
  if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(status) && seen.size && [...seen.values()].some((e) => TERMINAL[String(e.kind).toUpperCase()])) {
    finished();
  } else {
    subscribe();
  }
  // A reload right after a line arrived still resumes from that line.
  const flush = () => saveCache(buildId, [...seen.values()].sort((a, b) => a.seq - b.seq));
  window.addEventListener('pagehide', flush);
  ctx.onDispose(() => { window.removeEventListener('pagehide', flush); clearTimeout(persistTimer); if (unsubscribe) unsubscribe(); });
}
