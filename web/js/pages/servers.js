// Servers: every server of the org with its status and URL.
import { gql, ws } from '../graphql.js';
import { SERVERS, SERVER_STATUS_SUB } from '../queries.js';
import { h, replace, pageHead, loading, errorBox, empty, badge, urlWithCopy, timeEl } from '../ui.js';

export async function render(main, ctx) {
  const body = h('div', {}, loading('Loading your servers…'));
  replace(main, pageHead('Servers', h('a', { class: 'button', href: '#/new' }, 'New server')), body);
  let data;
  try {
    data = await gql(SERVERS);
  } catch (e) {
    if (!ctx.alive) return;
    if (e.code === 'UNAUTHENTICATED') throw e;
    replace(body, errorBox(e, 'Could not load your servers'));
    return;
  }
  if (!ctx.alive) return;
  const servers = (data.servers || []).filter((s) => s.status !== 'DELETED');
  if (!servers.length) {
    replace(body, empty(
      h('p', {}, 'No servers yet.'),
      h('p', {}, h('a', { class: 'button', href: '#/new' }, 'Describe your first server'))));
    return;
  }
  replace(body, h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'servers-table' },
    h('caption', { class: 'visually-hidden' }, 'Your servers'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'URL'), h('th', { scope: 'col' }, 'Updated'))),
    h('tbody', {}, servers.map((s) => h('tr', { dataset: { serverId: s.id } },
      h('td', { 'data-label': 'Name' }, h('a', { href: `#/servers/${encodeURIComponent(s.id)}` }, s.name || s.slug), h('div', { class: 'muted' }, h('code', {}, s.slug))),
      h('td', { 'data-label': 'Status', dataset: { statusOf: s.id } }, badge(s.status)),
      h('td', { 'data-label': 'URL' }, urlWithCopy(s.url, 'Copy URL')),
      h('td', { 'data-label': 'Updated' }, timeEl(s.updatedAt || s.createdAt))))))));
  // Servers still building update in place as their builds go.
  for (const s of servers.filter((x) => x.status === 'BUILDING')) {
    const unsub = ws.subscribe({ query: SERVER_STATUS_SUB, variables: { serverId: s.id } }, {
      next: (d) => {
        const cell = body.querySelector(`[data-status-of="${CSS.escape(s.id)}"]`);
        if (cell && d.serverStatus) replace(cell, badge(d.serverStatus.status), d.serverStatus.latestBuildStep && d.serverStatus.status === 'BUILDING' ? h('span', { class: 'muted' }, ` ${d.serverStatus.latestBuildStep}`) : null);
      },
      error: (e) => console.warn('serverStatus:', e.message),
    });
    ctx.onDispose(unsub);
  }
}
