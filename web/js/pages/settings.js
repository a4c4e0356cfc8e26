// Settings: the org, its members, API keys (create: plaintext shown once; revoke), connected apps (revoke), usage and quotas.
import { gql } from '../graphql.js';
import { SETTINGS, CREATE_API_KEY, REVOKE_API_KEY, REVOKE_CONNECTED_APP } from '../queries.js';
import { h, replace, pageHead, loading, errorBox, empty, timeEl, field, busy, copyButton, confirmDialog, uid } from '../ui.js';

export async function render(main, ctx) {
  const body = h('div', {}, loading('Loading settings…'));
  replace(main, pageHead('Settings'), body);
  let data;
  try {
    data = await gql(SETTINGS);
  } catch (e) {
    if (!ctx.alive) return;
    if (e.code === 'UNAUTHENTICATED') throw e;
    replace(body, errorBox(e, 'Could not load the settings'));
    return;
  }
  if (!ctx.alive) return;
  const { org } = data;
  const keysSection = h('section', { class: 'card', 'aria-labelledby': 'keys-h', id: 'api-keys' });
  const appsSection = h('section', { class: 'card', 'aria-labelledby': 'apps-h', id: 'connected-apps' });
  replace(body,
    h('section', { class: 'card', 'aria-labelledby': 'org-h' }, h('h2', { id: 'org-h' }, 'Organization'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Name'), h('dd', {}, org.name),
        h('dt', {}, 'Slug'), h('dd', {}, h('code', {}, org.slug)),
        h('dt', {}, 'Plan'), h('dd', {}, org.plan),
        h('dt', {}, 'Your role'), h('dd', {}, data.me?.role || '—'),
        org.createdAt ? [h('dt', {}, 'Created'), h('dd', {}, timeEl(org.createdAt))] : null)),
    h('section', { class: 'card', 'aria-labelledby': 'usage-h', id: 'usage' }, h('h2', { id: 'usage-h' }, 'Usage and quotas'), usage(org, data.servers || [], data.apiKeys || [])),
    h('section', { class: 'card', 'aria-labelledby': 'members-h' }, h('h2', { id: 'members-h' }, 'Members'), members(org.members)),
    keysSection, appsSection);
  renderKeys(keysSection, ctx, data.apiKeys || []);
  renderApps(appsSection, data.connectedApps || []);
}

// Each OAuth grant: the app (its self-chosen name, marked unverified), the
// server, the scopes and the last use; Revoke ends its refresh tokens.
function renderApps(section, apps) {
  const err = h('div');
  const listEl = h('div');
  function renderList() {
    if (!apps.length) { replace(listEl, empty('No apps are connected.')); return; }
    replace(listEl, h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'connected-apps-table' },
      h('thead', {}, h('tr', {}, ['App', 'Server', 'Scopes', 'User', 'Last used', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, apps.map((a) => h('tr', { dataset: { grantId: a.id } },
        h('td', { 'data-label': 'App' }, a.clientName || a.clientId, ' ', a.verified ? null : h('span', { class: 'badge idle' }, 'unverified')),
        h('td', { 'data-label': 'Server' }, a.serverName || h('code', {}, a.resource)),
        h('td', { 'data-label': 'Scopes' }, a.scopes.join(' ')),
        h('td', { 'data-label': 'User' }, a.email),
        h('td', { 'data-label': 'Last used' }, timeEl(a.lastUsedAt)),
        h('td', {}, revokeButton(a))))))));
  }
  function revokeButton(a) {
    const name = a.clientName || a.clientId;
    const b = h('button', { type: 'button', class: 'secondary small' }, 'Revoke', h('span', { class: 'visually-hidden' }, ` ${name}`));
    b.addEventListener('click', async () => {
      if (!(await confirmDialog(`Disconnect “${name}”?`, h('p', {}, 'The app can no longer refresh its access; the access it holds ends within minutes.'), 'Revoke', { danger: true }))) return;
      busy(b, err, async () => {
        await gql(REVOKE_CONNECTED_APP, { id: a.id });
        apps.splice(apps.indexOf(a), 1);
        renderList();
      });
    });
    return b;
  }
  replace(section, h('h2', { id: 'apps-h' }, 'Connected apps'),
    h('p', { class: 'muted' }, 'Apps you allowed to use your servers through OAuth.'),
    err, listEl);
  renderList();
}

function usage(org, servers, keys) {
  const alive = servers.filter((s) => s.status !== 'DELETED');
  const count = (st) => alive.filter((s) => s.status === st).length;
  const rows = [
    ['Servers', alive.length],
    ['Live servers', count('LIVE')],
    ['Building', count('BUILDING')],
    ['Failed', count('FAILED')],
    ['Active API keys', keys.filter((k) => !k.revokedAt).length],
  ];
  return [
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'What'), h('th', { scope: 'col' }, 'Used'))),
      h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('td', { 'data-label': 'What' }, k), h('td', { 'data-label': 'Used' }, String(v))))))),
    h('p', { class: 'hint' }, `Plan: ${org.plan}. Quotas are read-only here; ask the platform operator to change your plan.`),
  ];
}

function members(list) {
  if (!list || !list.length) return empty('No members.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'stack' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Email'), h('th', { scope: 'col' }, 'Role'), h('th', { scope: 'col' }, 'Since'))),
    h('tbody', {}, list.map((m) => h('tr', {},
      h('td', { 'data-label': 'Email' }, m.email),
      h('td', { 'data-label': 'Role' }, m.role),
      h('td', { 'data-label': 'Since' }, timeEl(m.joinedAt)))))));
}

function renderKeys(section, ctx, keys) {
  const name = h('input', { type: 'text', name: 'key-name', autocomplete: 'off', maxlength: 80, placeholder: 'CI deploys' });
  const err = h('div');
  const once = h('div', { 'aria-live': 'polite' });
  const btn = h('button', { type: 'submit' }, 'Create key');
  const form = h('form', { class: 'inline-form', novalidate: true }, field('Name of the new key', name, { required: true }), btn);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!name.value.trim()) { name.setAttribute('aria-invalid', 'true'); name.focus(); return; }
    name.removeAttribute('aria-invalid');
    busy(btn, err, async () => {
      const res = (await gql(CREATE_API_KEY, { name: name.value.trim() })).createApiKey;
      name.value = '';
      const id = uid('key');
      replace(once, h('div', { class: 'notice secret-once', id: 'new-api-key' },
        h('strong', {}, 'Copy your new key now: it is shown only once.'),
        h('p', { class: 'copy-row' }, h('code', { id }, res.key), copyButton(res.key, 'Copy key', { describedBy: id })),
        h('p', { class: 'hint' }, 'Use it as ', h('code', {}, 'Authorization: Bearer bmm_…'), ' with the GraphQL API or the CLI.')));
      keys.unshift(res.apiKey);
      renderList();
    }, 'Creating…');
  });
  const listEl = h('div');
  function renderList() {
    const live = keys.filter((k) => k && !k.revokedAt);
    const revoked = keys.filter((k) => k && k.revokedAt);
    if (!keys.length) { replace(listEl, empty('No API keys yet.')); return; }
    replace(listEl, h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'api-keys-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Key', 'Created', 'Last used', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, [...live, ...revoked].map((k) => h('tr', { dataset: { keyId: k.id } },
        h('td', { 'data-label': 'Name' }, k.name),
        h('td', { 'data-label': 'Key' }, h('code', {}, `${k.prefix || 'bmm_'}…`)),
        h('td', { 'data-label': 'Created' }, timeEl(k.createdAt)),
        h('td', { 'data-label': 'Last used' }, k.lastUsedAt ? timeEl(k.lastUsedAt) : 'never'),
        h('td', {}, k.revokedAt ? h('span', { class: 'badge idle' }, 'revoked') : revokeButton(k))))))));
  }
  function revokeButton(k) {
    const b = h('button', { type: 'button', class: 'secondary small' }, 'Revoke', h('span', { class: 'visually-hidden' }, ` ${k.name}`));
    b.addEventListener('click', async () => {
      if (!(await confirmDialog(`Revoke “${k.name}”?`, h('p', {}, 'Anything using this key stops working at once. This cannot be undone.'), 'Revoke', { danger: true }))) return;
      busy(b, err, async () => {
        const res = (await gql(REVOKE_API_KEY, { id: k.id })).revokeApiKey;
        k.revokedAt = res?.revokedAt || new Date().toISOString();
        renderList();
      });
    });
    return b;
  }
  replace(section, h('h2', { id: 'keys-h' }, 'API keys'),
    h('p', { class: 'muted' }, 'Keys act for your organization in the GraphQL API and the CLI.'),
    form, err, once, listEl);
  renderList();
}
