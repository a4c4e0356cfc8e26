// Audit log: every mutation of the org, newest first, filtered by action, paged by cursor.
import { gql } from '../graphql.js';
import { AUDIT_LOG } from '../queries.js';
import { h, replace, pageHead, loading, errorBox, empty, timeEl, field, shortId } from '../ui.js';
import { navigate } from '../nav.js';

const PAGE = 50;
const KNOWN_ACTIONS = ['server.preview', 'server.create', 'server.iterate', 'server.version.create', 'server.rollback', 'server.redeploy', 'server.delete', 'server.secret.set', 'build.cancel', 'api_key.create', 'api_key.revoke', 'auth.sign_in', 'auth.sign_out'];

function href(action, after, trail) {
  const q = new URLSearchParams();
  if (action) q.set('action', action);
  if (after) q.set('after', after);
  if (trail && trail.length) q.set('trail', trail.join(','));
  const s = q.toString();
  return `/audit${s ? `?${s}` : ''}`;
}

export async function render(main, ctx, _params, query) {
  const action = query.get('action') || '';
  const after = query.get('after') || '';
  // Cursors of the pages before this one, so "Newer" goes back without the server paging backwards.
  const trail = (query.get('trail') || '').split(',').filter(Boolean);

  const input = h('input', { type: 'search', name: 'action', list: 'audit-actions', value: action, placeholder: 'server.create' });
  const form = h('form', { class: 'inline-form card', role: 'search', 'aria-label': 'Filter the audit log' },
    field('Action', input, { hint: 'Exact action name; leave empty for all.' }),
    h('datalist', { id: 'audit-actions' }, KNOWN_ACTIONS.map((a) => h('option', { value: a }))),
    h('button', { type: 'submit' }, 'Filter'),
    action ? h('a', { class: 'button secondary', href: '#/audit' }, 'Clear filter') : null);
  form.addEventListener('submit', (e) => { e.preventDefault(); navigate(href(input.value.trim(), '', [])); });

  const body = h('div', {}, loading('Loading the audit log…'));
  replace(main, pageHead('Audit log'), h('p', { class: 'lede' }, 'Who did what in your organization, newest first.'), form, body);

  let entries;
  const emails = new Map();
  try {
    const data = await gql(AUDIT_LOG, { limit: PAGE, action: action || null, after: after || null });
    entries = data.auditLog || [];
    for (const m of data.org?.members || []) emails.set(m.userId, m.email);
  } catch (e) {
    if (!ctx.alive) return;
    if (e.code === 'UNAUTHENTICATED') throw e;
    replace(body, errorBox(e, 'Could not load the audit log'));
    return;
  }
  if (!ctx.alive) return;
  if (!entries.length) {
    replace(body, empty(after ? 'No older entries.' : action ? `No entries with the action “${action}”.` : 'Nothing has happened yet.'), pager());
    return;
  }
  function pager() {
    const newer = trail.length || after
      ? h('a', { class: 'button secondary', href: `#${href(action, trail[trail.length - 1] || '', trail.slice(0, -1))}` }, 'Newer')
      : h('span');
    const older = entries && entries.length === PAGE
      ? h('a', { class: 'button secondary', href: `#${href(action, String(entries[entries.length - 1].id), after ? [...trail, after] : trail.length ? trail : [''])}` }, 'Older')
      : h('span');
    return h('nav', { class: 'pager', 'aria-label': 'Audit log pages' }, newer, older);
  }
  replace(body, h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'audit-table' },
    h('caption', { class: 'visually-hidden' }, 'Audit log entries'),
    h('thead', {}, h('tr', {}, ['When', 'Action', 'Who', 'Resource', 'Details', 'IP'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, entries.map((e) => h('tr', { dataset: { id: e.id } },
      h('td', { 'data-label': 'When' }, timeEl(e.at)),
      h('td', { 'data-label': 'Action' }, h('a', { href: `#${href(e.action, '', [])}`, title: `Only ${e.action}` }, h('code', {}, e.action))),
      h('td', { 'data-label': 'Who' }, e.userId ? (emails.get(e.userId) || h('code', {}, shortId(e.userId))) : h('span', { class: 'muted' }, 'system')),
      h('td', { 'data-label': 'Resource' }, e.resourceType, e.resourceId ? [' ', h('code', { title: e.resourceId }, shortId(e.resourceId))] : null),
      h('td', { 'data-label': 'Details' }, metadata(e.metadata)),
      h('td', { 'data-label': 'IP' }, e.ip || '—')))))), pager());
}

function metadata(m) {
  let obj = m;
  if (typeof m === 'string') { try { obj = JSON.parse(m); } catch { return m; } }
  if (!obj || typeof obj !== 'object' || !Object.keys(obj).length) return h('span', { class: 'muted' }, '—');
  return h('dl', { class: 'facts' }, Object.entries(obj).map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))]));
}
