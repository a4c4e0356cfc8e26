// One server: overview (status, URL, install snippets, tools), live runtime
// logs, the OAuth connection trace, versions and builds (rollback), redeploy, secrets,
// iterate (instruction → diff → new version) and delete.
import { gql, ws } from '../graphql.js';
import * as Q from '../queries.js';
import { h, replace, pageHead, loading, errorBox, empty, badge, busy, timeEl, urlWithCopy, toolList, field, confirmDialog, shortId } from '../ui.js';
import { installSnippets, loadSnippets } from './install.js';
import { navigate } from '../nav.js';

const TABS = [
  ['', 'Overview'],
  ['logs', 'Logs'],
  ['connections', 'Connections'],
  ['versions', 'Versions & builds'],
  ['secrets', 'Secrets'],
  ['iterate', 'Change'],
  ['delete', 'Delete'],
];

export async function render(main, ctx, [serverId, tab = '']) {
  const head = pageHead('Server');
  const body = h('div', {}, loading('Loading the server…'));
  replace(main, head, body);
  let server;
  try {
    server = (await gql(Q.SERVER, { id: serverId })).server;
  } catch (e) {
    if (!ctx.alive) return;
    if (e.code === 'UNAUTHENTICATED') throw e;
    replace(body, errorBox(e, 'Could not load this server'), h('p', {}, h('a', { href: '#/servers' }, 'Back to your servers')));
    return;
  }
  if (!ctx.alive) return;
  if (!server) { replace(body, errorBox({ errors: [{ message: 'There is no server with this id in your organization.', extensions: { code: 'NOT_FOUND' } }] })); return; }

  const base = `#/servers/${encodeURIComponent(server.id)}`;
  const title = server.name || server.slug;
  head.querySelector('h1').textContent = title;
  const tabLabel = TABS.find(([k]) => k === tab)?.[1] || 'Overview';
  document.title = `${title} — ${tabLabel} · BuildMyMCP`;

  // DEGRADED / DOWN say why (the reconciler is restoring it, or could not).
  const statusView = (status, reason) => [badge(status), reason ? [' ', h('span', { class: 'hint', id: 'server-status-reason' }, reason)] : null];
  const statusEl = h('span', { id: 'server-status', role: 'status' }, statusView(server.status, server.statusReason));
  const latestEl = h('dd', { id: 'latest-build' }, '—');
  const summary = h('div', { class: 'card' }, h('dl', { class: 'facts' },
    h('dt', {}, 'Status'), h('dd', {}, statusEl),
    h('dt', {}, 'URL'), h('dd', { id: 'server-url' }, urlWithCopy(server.url, 'Copy URL')),
    server.currentVersion != null ? [h('dt', {}, 'Version'), h('dd', {}, h('span', { id: 'current-version' }, String(server.currentVersion)), ' ', redeployButton(server))] : null,
    h('dt', {}, 'Latest build'), latestEl,
    server.description ? [h('dt', {}, 'Description'), h('dd', {}, server.description)] : null));

  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Server sections' }, h('ul', {}, TABS.map(([k, label]) =>
    h('li', {}, h('a', { href: k ? `${base}/${k}` : base, 'aria-current': k === tab ? 'page' : null }, label)))));
  const section = h('div', { id: 'server-section' });
  replace(body, summary, tabs, section);

  // Status changes (a build going live, a container failing) show up live.
  const unsubStatus = ws.subscribe({ query: Q.SERVER_STATUS_SUB, variables: { serverId: server.id } }, {
    next: (d) => {
      const s = d.serverStatus;
      if (!s) return;
      replace(statusEl, statusView(s.status, s.statusReason));
      if (s.latestBuildId) {
        replace(latestEl, h('a', { href: `#/builds/${encodeURIComponent(s.latestBuildId)}` }, 'build ', h('code', {}, shortId(s.latestBuildId))),
          ' ', badge(s.latestBuildStatus),
          s.latestBuildStep && !['SUCCEEDED', 'CANCELLED'].includes(s.latestBuildStatus) ? ` at ${s.latestBuildStep}` : '');
      }
    },
    error: (e) => console.warn('serverStatus subscription:', e.message),
  });
  ctx.onDispose(unsubStatus);

  const sections = { '': overview, logs, connections, versions, secrets, iterate, delete: remove };
  const fn = sections[tab];
  if (!fn) { replace(section, errorBox({ errors: [{ message: `There is no “${tab}” section.`, extensions: { code: 'NOT_FOUND' } }] })); return; }
  await fn(section, ctx, server, base);
}

async function overview(el, ctx, server) {
  const snippets = h('div', {}, loading('Loading the install snippets…'));
  const events = h('div', {}, loading('Loading the runtime events…'));
  replace(el,
    h('section', { class: 'card', 'aria-labelledby': 'install-h' }, h('h2', { id: 'install-h' }, 'Connect a client'), snippets),
    h('section', { class: 'card', 'aria-labelledby': 'tools-h', id: 'server-tools' },
      h('h2', { id: 'tools-h' }, `Tools (${(server.tools || []).length})`), toolList(server.tools)),
    h('section', { class: 'card', 'aria-labelledby': 'events-h', id: 'server-events' },
      h('h2', { id: 'events-h' }, 'Runtime events'), events));
  gql(Q.SERVER_EVENTS, { id: server.id, limit: 20 }).then((d) => {
    if (!ctx.alive) return;
    const list = d.server?.events || [];
    replace(events, list.length
      ? h('ol', { class: 'log', 'aria-label': 'Runtime events, newest first' }, list.map((e) =>
        h('li', { dataset: { kind: e.kind } }, timeEl(e.at), ' ', h('code', {}, e.kind), ' ', e.message)))
      : empty('Nothing has happened to the running server yet.'));
  }).catch((e) => { if (ctx.alive) replace(events, errorBox(e, 'Could not load the runtime events')); });
  try {
    const inst = await loadSnippets(server);
    if (ctx.alive) replace(snippets, h('p', {}, 'Add this server to your MCP client; the client signs in with OAuth the first time it connects.'), installSnippets(inst.snippets, 'h3'));
  } catch (e) {
    if (ctx.alive) replace(snippets, errorBox(e, 'Could not load the install snippets'));
  }
}

function logs(el, ctx, server) {
  const MAX = 2000;
  const list = h('ol', { class: 'log runtime', id: 'server-logs', role: 'log', 'aria-label': 'Runtime logs', tabindex: '0' });
  const state = h('p', { class: 'muted', role: 'status' }, 'Connecting to the container’s logs…');
  const err = h('div');
  let count = 0;
  const clearBtn = h('button', { type: 'button', class: 'secondary small', onclick: () => { replace(list); count = 0; } }, 'Clear');
  replace(el, h('section', { 'aria-labelledby': 'logs-h' },
    h('div', { class: 'page-head' }, h('h2', { id: 'logs-h', style: 'margin:0' }, 'Runtime logs'), clearBtn),
    h('p', { class: 'muted' }, 'What the live container prints, as it prints it (the last 200 lines first).'),
    state, err, list));
  let unsub = null;
  const start = () => {
    replace(err);
    unsub = ws.subscribe({ query: Q.SERVER_LOGS_SUB, variables: { serverId: server.id, tail: 200 } }, {
      next: (d) => {
        const line = d.serverLogs;
        if (typeof line !== 'string') return;
        state.textContent = 'Streaming.';
        const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 24;
        list.appendChild(h('li', { class: /"level"\s*:\s*"(error|fatal)"|\b(ERROR|Error:)/.test(line) ? 'error' : '' }, h('span', { class: 'msg' }, line)));
        count += 1;
        if (count > MAX) { list.firstElementChild?.remove(); count -= 1; }
        if (stick) list.scrollTop = list.scrollHeight;
      },
      error: (e) => { if (ctx.alive) replace(err, errorBox(e, 'The log stream stopped'), h('button', { type: 'button', class: 'secondary small', onclick: () => { if (unsub) unsub(); start(); } }, 'Reconnect')); },
      complete: () => { if (ctx.alive) state.textContent = 'The container stopped; no more logs.'; },
    });
  };
  start();
  ctx.onDispose(() => unsub && unsub());
}

const TRACE_STEPS = [
  ['discovery', 'found the OAuth metadata'],
  ['registration', 'registered itself'],
  ['authorize', 'signed in and was approved'],
  ['token', 'got an access token'],
  ['mcp', 'made its first MCP call'],
];

async function connections(el, ctx, server) {
  replace(el, loading('Loading the connection trace…'));
  let trace;
  try {
    // The API lists newest first; each client's steps read oldest first.
    trace = [...((await gql(Q.SERVER_CONNECTIONS, { id: server.id })).server.connectionTrace || [])].reverse();
  } catch (e) { if (ctx.alive) replace(el, errorBox(e, 'Could not load the connection trace')); return; }
  if (!ctx.alive) return;
  const intro = h('p', { class: 'muted' }, 'Each MCP client’s steps while connecting: discovery, registration, sign-in and consent, token, first call. A failed step says why.');
  if (!trace.length) { replace(el, h('h2', {}, 'Connections'), intro, empty('No client has tried to connect yet.')); return; }
  const groups = new Map();
  for (const ev of trace) {
    const k = ev.clientId || ev.clientName || 'unknown client';
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(ev);
  }
  replace(el, h('h2', {}, 'Connections'), intro, [...groups.entries()].map(([k, evs]) => {
    const name = evs.find((e) => e.clientName)?.clientName || k;
    const failed = evs.some((e) => !e.ok);
    // Where this client got to: the latest outcome of each step.
    const last = new Map();
    for (const e of evs) last.set(e.step, e);
    const summary = h('ol', { class: 'trace-summary', 'aria-label': `How far ${name} got` }, TRACE_STEPS.map(([step, words]) => {
      const e = last.get(step);
      const state = !e ? 'not reached' : e.ok ? 'ok' : 'failed';
      return h('li', { dataset: { state } }, h('span', { class: `badge ${!e ? 'idle' : e.ok ? 'ok' : 'bad'}` }, state), ' ', words);
    }));
    return h('section', { class: 'card', 'aria-label': `Client ${name}` },
      h('h3', {}, name, ' ', failed ? h('span', { class: 'badge bad' }, 'had failures') : h('span', { class: 'badge ok' }, 'ok')),
      summary,
      evs[0].clientId && evs[0].clientId !== name ? h('p', { class: 'muted' }, 'client id ', h('code', {}, evs[0].clientId)) : null,
      h('ol', { class: 'trace' }, evs.map((e) => h('li', { dataset: { ok: String(!!e.ok) } },
        h('strong', {}, e.step),
        h('span', {}, e.ok ? h('span', { class: 'badge ok' }, 'ok') : h('span', { class: 'badge bad' }, 'failed'), ' ', e.ok ? (e.detail || '') : ''),
        !e.ok ? h('span', { class: 'why' }, e.detail || 'No reason recorded.') : null,
        h('span', { class: 'when' }, timeEl(e.at))))));
  }));
}

async function versions(el, ctx, server) {
  replace(el, loading('Loading versions and builds…'));
  let data;
  try { data = (await gql(Q.SERVER_VERSIONS, { id: server.id })).server; } catch (e) { if (ctx.alive) replace(el, errorBox(e, 'Could not load the versions')); return; }
  if (!ctx.alive) return;
  const err = h('div');
  const current = data.currentVersion ?? (data.versions || []).find((v) => v.isCurrent)?.version;
  const vs = [...(data.versions || [])].sort((a, b) => b.version - a.version);
  const bs = data.builds || [];
  replace(el,
    h('section', { 'aria-labelledby': 'v-h' }, h('h2', { id: 'v-h' }, 'Versions'), err,
      vs.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'versions-table' },
        h('thead', {}, h('tr', {}, ['Version', 'Made', 'Generator', 'Change', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, vs.map((v) => h('tr', { dataset: { version: v.version } },
          h('td', { 'data-label': 'Version' }, `v${v.version}`, v.version === current ? [' ', h('span', { class: 'badge ok' }, 'current')] : null),
          h('td', { 'data-label': 'Made' }, timeEl(v.createdAt)),
          h('td', { 'data-label': 'Generator' }, v.generator || '—'),
          h('td', { 'data-label': 'Change' }, v.instruction || (v.version === 1 ? 'first version' : '—')),
          h('td', {}, v.version !== current ? rollbackButton(server, v.version, err) : null)))))) : empty('No versions yet.')),
    h('section', { 'aria-labelledby': 'b-h' }, h('h2', { id: 'b-h' }, 'Builds'),
      bs.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'builds-table' },
        h('thead', {}, h('tr', {}, ['Build', 'Status', 'Version', 'Started', 'Finished', 'Workflow'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, bs.map((b) => h('tr', { dataset: { buildId: b.id } },
          h('td', { 'data-label': 'Build' }, h('a', { href: `#/builds/${encodeURIComponent(b.id)}` }, h('code', {}, shortId(b.id)))),
          h('td', { 'data-label': 'Status' }, badge(b.status)),
          h('td', { 'data-label': 'Version' }, b.version != null ? `v${b.version}` : '—'),
          h('td', { 'data-label': 'Started' }, timeEl(b.createdAt)),
          h('td', { 'data-label': 'Finished' }, timeEl(b.finishedAt)),
          h('td', { 'data-label': 'Workflow' }, b.temporalUrl ? h('a', { href: b.temporalUrl, target: '_blank', rel: 'noopener' }, 'Temporal', h('span', { class: 'visually-hidden' }, ` workflow of build ${shortId(b.id)} (opens in a new tab)`)) : '—')))))) : empty('No builds yet.')));
}

// The live version built and deployed again: how changed secrets reach it.
function redeployButton(server) {
  const err = h('div');
  const btn = h('button', { type: 'button', class: 'secondary small', id: 'redeploy' }, 'Redeploy');
  btn.addEventListener('click', async () => {
    const ok = await confirmDialog(`Redeploy version ${server.currentVersion}?`, h('p', {}, `A new container of version ${server.currentVersion} starts with the secrets as they are now. The running one keeps serving until the new one has passed its smoke test.`), 'Redeploy');
    if (!ok) return;
    busy(btn, err, async () => {
      const res = (await gql(Q.REDEPLOY_SERVER, { serverId: server.id })).redeployServer;
      if (res?.build?.id) navigate(`/builds/${encodeURIComponent(res.build.id)}`);
    }, 'Redeploying…');
  });
  return h('span', {}, btn, err);
}

function rollbackButton(server, version, err) {
  const btn = h('button', { type: 'button', class: 'secondary small' }, `Roll back to v${version}`);
  btn.addEventListener('click', async () => {
    const ok = await confirmDialog(`Roll back to version ${version}?`, h('p', {}, `Clients of ${server.name || server.slug} will be served version ${version} once it is deployed and smoke-tested. Nothing is deleted; you can roll forward again.`), 'Roll back');
    if (!ok) return;
    busy(btn, err, async () => {
      const res = (await gql(Q.ROLLBACK_SERVER, { serverId: server.id, version })).rollbackServer;
      if (res?.build?.id) navigate(`/builds/${encodeURIComponent(res.build.id)}`);
      else navigate(`/servers/${encodeURIComponent(server.id)}/versions`);
    }, 'Rolling back…');
  });
  return btn;
}

async function secrets(el, ctx, server) {
  replace(el, loading('Loading secrets…'));
  let data;
  try { data = (await gql(Q.SERVER_SECRETS, { id: server.id })).server; } catch (e) { if (ctx.alive) replace(el, errorBox(e, 'Could not load the secrets')); return; }
  if (!ctx.alive) return;
  const list = h('div', { id: 'secrets-list' });
  const stored = [...(data.secrets || [])];
  function renderList() {
    replace(list, stored.length ? stored.map(secretForm) : empty('No secrets stored for this server.'));
  }
  function secretForm(secret) {
    const input = h('input', { type: 'password', autocomplete: 'new-password', spellcheck: 'false', name: `secret-${secret.key}` });
    const err = h('div');
    const done = h('p', { role: 'status', class: 'hint' });
    const btn = h('button', { type: 'submit' }, 'Replace');
    const updated = h('span', {}, timeEl(secret.updatedAt));
    const form = h('form', { class: 'card', dataset: { secret: secret.key }, novalidate: true },
      h('h3', {}, h('code', {}, secret.key), ' ', h('span', { class: 'badge ok' }, 'set')),
      h('p', { class: 'hint' }, 'Last changed ', updated, '. The value is never shown.'),
      h('div', { class: 'inline-form' }, field(`New value for ${secret.key}`, input, { required: true }), btn),
      done, err);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!input.value) { input.setAttribute('aria-invalid', 'true'); input.focus(); return; }
      busy(btn, err, async () => {
        const res = (await gql(Q.SET_SECRET, { serverId: server.id, key: secret.key, value: input.value })).setServerSecret;
        input.value = '';
        input.removeAttribute('aria-invalid');
        replace(updated, timeEl(res?.updatedAt));
        done.textContent = `${secret.key} replaced. The server uses it from its next build: redeploy to use it now.`;
      }, 'Saving…');
    });
    return form;
  }
  // A new secret: the key is an environment variable name.
  const keyInput = h('input', { type: 'text', name: 'new-secret-key', autocomplete: 'off', spellcheck: 'false', pattern: '[A-Z][A-Z0-9_]*', maxlength: 64, placeholder: 'API_TOKEN' });
  const valueInput = h('input', { type: 'password', name: 'new-secret-value', autocomplete: 'new-password', spellcheck: 'false' });
  const addErr = h('div');
  const addDone = h('p', { role: 'status', class: 'hint' });
  const addBtn = h('button', { type: 'submit' }, 'Set secret');
  const addForm = h('form', { class: 'card', novalidate: true, id: 'add-secret' },
    h('h3', {}, 'Set a secret'),
    h('div', { class: 'inline-form' },
      field('Key', keyInput, { hint: 'A-Z, 0-9 and _, starting with a letter', required: true }),
      field('Value', valueInput, { required: true }),
      addBtn),
    addDone, addErr);
  addForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const key = keyInput.value.trim().toUpperCase();
    for (const x of [keyInput, valueInput]) x.removeAttribute('aria-invalid');
    if (!/^[A-Z][A-Z0-9_]{0,63}$/.test(key)) { keyInput.setAttribute('aria-invalid', 'true'); keyInput.focus(); replace(addErr, h('div', { class: 'error-box', role: 'alert' }, 'The key must look like an environment variable: A-Z, 0-9 and _, starting with a letter.')); return; }
    if (!valueInput.value) { valueInput.setAttribute('aria-invalid', 'true'); valueInput.focus(); return; }
    busy(addBtn, addErr, async () => {
      const res = (await gql(Q.SET_SECRET, { serverId: server.id, key, value: valueInput.value })).setServerSecret;
      keyInput.value = '';
      valueInput.value = '';
      const i = stored.findIndex((x) => x.key === res.key);
      if (i >= 0) stored[i] = res; else stored.push(res);
      stored.sort((a, b) => a.key.localeCompare(b.key));
      renderList();
      addDone.textContent = `${res.key} saved. The server uses it from its next build: redeploy to use it now.`;
    }, 'Saving…');
  });
  renderList();
  replace(el, h('h2', {}, 'Secrets'),
    h('p', { class: 'muted' }, 'Credentials are stored encrypted and handed to the server as environment variables. Values are never shown again; you can replace them. A new value is used from the server’s next build; Redeploy (above) starts one of the live version.'),
    list, addForm);
}

function iterate(el, ctx, server) {
  const instruction = h('textarea', { name: 'instruction', rows: 4, placeholder: 'For example: add a tool that reverses a string.' });
  const err = h('div');
  const result = h('div', { id: 'iterate-result' });
  const btn = h('button', { type: 'submit' }, 'Preview the change');
  const form = h('form', { class: 'card', novalidate: true },
    field('What should change?', instruction, { hint: 'The current version keeps serving until the new one passes its checks and smoke test.', required: true }),
    h('div', { class: 'actions' }, btn), err);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!instruction.value.trim()) { instruction.setAttribute('aria-invalid', 'true'); instruction.focus(); return; }
    instruction.removeAttribute('aria-invalid');
    replace(result);
    busy(btn, err, async () => {
      const res = (await gql(Q.ITERATE_SERVER, { input: { serverId: server.id, instruction: instruction.value.trim() } })).iterateServer;
      if (ctx.alive) await showDiff(result, server, res);
    }, 'Working out the change…');
  });
  replace(el, h('h2', {}, 'Change this server'), form, result);
}

async function showDiff(el, server, result) {
  const preview = result.preview;
  const d = result.diff || {};
  const breaking = d.breaking || [];
  const items = [
    ...(d.added || []).map((n) => h('li', { class: 'added' }, h('span', { class: 'badge ok' }, 'added'), h('code', {}, n))),
    ...(d.removed || []).map((n) => h('li', { class: 'removed' }, h('span', { class: 'badge bad' }, 'removed'), h('code', {}, n))),
    ...(d.changed || []).map((n) => h('li', { class: 'changed' }, h('span', { class: 'badge warn' }, 'changed'), h('code', {}, n))),
  ];
  // Ask only for credentials the new version adds (stored ones are kept).
  let storedKeys = new Set();
  const err = h('div');
  try { storedKeys = new Set(((await gql(Q.SERVER_SECRETS, { id: server.id })).server.secrets || []).map((s) => s.key)); } catch (e) { err.appendChild(errorBox(e, 'Could not check which secrets are stored')); }
  const newCreds = (preview.credentials || []).filter((c) => !storedKeys.has(c.key)).map((c) => {
    const input = h('input', { type: 'password', name: `credential-${c.key}`, autocomplete: 'new-password', spellcheck: 'false' });
    return { c, input, el: field(c.label || c.key, input, { hint: h('span', {}, c.description ? `${c.description} ` : '', 'Stored encrypted as ', h('code', {}, c.key), '.'), required: c.required !== false }) };
  });
  const btn = h('button', { type: 'button' }, 'Build the new version');
  btn.addEventListener('click', () => {
    const missing = newCreds.filter((x) => x.c.required !== false && !x.input.value);
    for (const x of newCreds) x.input.removeAttribute('aria-invalid');
    if (missing.length) { for (const x of missing) x.input.setAttribute('aria-invalid', 'true'); missing[0].input.focus(); return; }
    busy(btn, err, async () => {
      const credentials = newCreds.filter((x) => x.input.value).map((x) => ({ key: x.c.key, value: x.input.value }));
      const res = (await gql(Q.CREATE_SERVER_VERSION, { input: { serverId: server.id, previewId: preview.id, credentials } })).createServerVersion;
      navigate(`/builds/${encodeURIComponent(res.build.id)}`);
    }, 'Starting the build…');
  });
  replace(el, h('section', { class: 'card', 'aria-labelledby': 'diff-h' },
    h('h3', { id: 'diff-h' }, 'What changes'),
    items.length ? h('ul', { class: 'diff' }, items) : h('p', { class: 'muted' }, 'No tool is added, removed or changed.'),
    breaking.length ? h('div', { class: 'warning-box', role: 'alert' },
      h('strong', {}, `${breaking.length} breaking change${breaking.length > 1 ? 's' : ''} for connected clients`),
      h('ul', {}, breaking.map((b) => h('li', {}, b)))) : h('p', {}, 'Nothing here breaks existing clients.'),
    (preview.warnings || []).length ? h('div', { class: 'warning-box', role: 'note' }, h('ul', {}, preview.warnings.map((w) => h('li', {}, w)))) : null,
    h('h3', {}, 'Tools in the new version'),
    toolList(preview.tools, { headingLevel: 'h4' }),
    newCreds.length ? h('fieldset', {}, h('legend', {}, 'Credentials the new version adds'), newCreds.map((x) => x.el)) : null,
    err,
    h('div', { class: 'actions' }, btn)));
}

function remove(el, ctx, server) {
  const name = server.name || server.slug;
  const input = h('input', { type: 'text', name: 'confirm-name', autocomplete: 'off', spellcheck: 'false' });
  const err = h('div');
  const btn = h('button', { type: 'submit', class: 'danger', disabled: true }, 'Delete this server');
  input.addEventListener('input', () => { btn.disabled = input.value !== name; });
  const form = h('form', { class: 'card', novalidate: true },
    h('p', {}, 'Deleting stops the server’s container, removes its route and revokes access for every connected client. Its audit entries stay.'),
    field(h('span', {}, 'Type ', h('strong', {}, name), ' to confirm'), input, { required: true }),
    err, h('div', { class: 'actions' }, btn));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (input.value !== name) { input.setAttribute('aria-invalid', 'true'); input.focus(); return; }
    busy(btn, err, async () => {
      await gql(Q.DELETE_SERVER, { id: server.id });
      navigate('/servers');
    }, 'Deleting…');
  });
  replace(el, h('h2', {}, 'Delete'), form);
}
