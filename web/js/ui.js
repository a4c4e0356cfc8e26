// Small DOM helpers. Text from the API is always inserted as text nodes,
// never as HTML.
import { signInUrl } from './nav.js';

/** h('div', {class: 'x', onclick: fn, 'aria-label': 'y'}, child, [children], 'text') */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (k === 'checked' || k === 'disabled' || k === 'required' || k === 'hidden' || k === 'open') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
export function replace(el, ...children) { clear(el); append(el, children); return el; }

let idCounter = 0;
export function uid(prefix = 'f') { idCounter += 1; return `${prefix}-${idCounter}`; }

/** A labelled form field. `input` is an element; the label is tied to it by id. */
export function field(labelText, input, { hint, required } = {}) {
  if (!input.id) input.id = uid('field');
  const hintEl = hint ? h('p', { class: 'hint', id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  if (required) { input.required = true; input.setAttribute('aria-required', 'true'); }
  return h('div', { class: 'field' },
    h('label', { for: input.id }, labelText, required ? h('span', { class: 'required-mark', 'aria-hidden': 'true' }, ' *') : null, required ? h('span', { class: 'visually-hidden' }, ' (required)') : null),
    input, hintEl);
}

const TITLES = {
  BAD_USER_INPUT: 'Please check what you entered',
  UNAUTHENTICATED: 'You are signed out',
  FORBIDDEN: 'You are not allowed to do this',
  NOT_FOUND: 'Not found',
  RATE_LIMITED: 'Too many requests',
  INTERNAL: 'The platform hit an internal error',
  NETWORK: 'Could not reach the API',
};

/** An API error in words: its message and code, never swallowed. */
export function errorBox(err, title) {
  const errors = err?.errors || [{ message: err?.message || String(err) }];
  const code = errors[0]?.extensions?.code;
  return h('div', { class: 'error-box', role: 'alert' },
    h('strong', {}, title || TITLES[code] || 'Something went wrong'),
    errors.map((e) => h('p', { style: 'margin:.25rem 0 0' }, e.message,
      e.extensions?.code ? [' ', h('code', {}, e.extensions.code)] : null,
      e.extensions?.field ? [' (field ', h('code', {}, e.extensions.field), ')'] : null,
      e.extensions?.retryAfter ? ` Try again in ${e.extensions.retryAfter} s.` : null,
      e.extensions?.correlationId ? [' Reference ', h('code', {}, e.extensions.correlationId), ' (give it to the operator).'] : null,
      e.path ? h('span', { class: 'visually-hidden' }, ` at ${e.path.join('.')}`) : null)),
    code === 'UNAUTHENTICATED' ? h('p', { style: 'margin:.25rem 0 0' }, h('a', { href: signInUrl() }, 'Sign in again')) : null);
}

/** A short, still distinguishable form of a UUIDv7 (its first digits are a timestamp). */
export function shortId(id) {
  const s = String(id ?? '');
  return s.length > 14 ? `${s.slice(0, 8)}…${s.slice(-4)}` : s;
}

export function loading(what = 'Loading…') { return h('p', { class: 'loading', role: 'status' }, what); }
export function empty(...children) { return h('div', { class: 'empty' }, ...children); }

const STATUS_CLASS = {
  LIVE: 'ok', SUCCEEDED: 'ok', READY: 'ok', ACTIVE: 'ok', OK: 'ok',
  FAILED: 'bad', CANCELLED: 'idle', DELETED: 'idle', STOPPED: 'idle', REVOKED: 'idle', DRAINING: 'idle',
  BUILDING: 'busy', RUNNING: 'busy', QUEUED: 'busy', STARTING: 'busy',
  RETRYING: 'warn', PENDING: 'idle', DEGRADED: 'warn', DOWN: 'bad',
};
export function badge(status) {
  const s = String(status || 'UNKNOWN').toUpperCase();
  return h('span', { class: `badge ${STATUS_CLASS[s] || 'idle'}` }, s.toLowerCase());
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}
export function timeEl(iso) { return iso ? h('time', { datetime: iso }, fmtTime(iso)) : '—'; }

export function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString(undefined, { hour12: false });
}

/** Copies text; the button says whether it worked (announced to screen readers). */
export function copyButton(text, label = 'Copy', { describedBy, ariaLabel } = {}) {
  const live = h('span', { class: 'visually-hidden', 'aria-live': 'polite' });
  const btn = h('button', { type: 'button', class: 'secondary small copy', 'aria-describedby': describedBy, 'aria-label': ariaLabel,
    onclick: async () => {
      const ok = await copyText(text);
      btn.firstChild.textContent = ok ? 'Copied' : 'Copy failed';
      live.textContent = ok ? `${ariaLabel || label}: copied to the clipboard` : 'Could not copy; select the text and copy it by hand';
      setTimeout(() => { btn.firstChild.textContent = label; live.textContent = ''; }, 2000);
    } }, h('span', {}, label));
  return h('span', {}, btn, live);
}

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(text); return true; }
  } catch { /* fall through to the textarea way */ }
  const ta = h('textarea', { 'aria-hidden': 'true', style: 'position:fixed;left:-9999px;top:0' });
  ta.value = text;
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  return ok;
}

export function urlWithCopy(url, label = 'Copy URL') {
  if (!url) return h('span', { class: 'muted' }, 'no URL yet');
  const id = uid('url');
  return h('span', { class: 'copy-row' }, h('code', { id }, url), copyButton(url, label, { describedBy: id }));
}

/** Page heading: one h1 per page, focused after navigation so screen readers hear where they are. */
export function pageHead(title, ...extra) {
  document.title = `${title} · BuildMyMCP`;
  return h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, title), extra.length ? h('div', { class: 'actions', style: 'margin:0' }, ...extra) : null);
}

/**
 * Marks the inputs an API error names (`extensions.field`, e.g.
 * `input.description`) as invalid and focuses the first one.
 * `fields` maps a field path (or its prefix) to an input element.
 */
export function markInvalid(err, fields) {
  let first = null;
  for (const e of err?.errors || []) {
    const f = e.extensions?.field;
    if (!f) continue;
    const key = Object.keys(fields).find((k) => f === k || f.startsWith(`${k}.`) || f.startsWith(`${k}[`));
    const el = key && fields[key];
    if (el) { el.setAttribute('aria-invalid', 'true'); first = first || el; }
  }
  if (first) first.focus();
}

/** Runs an async action from a button: disables it, shows errors in `errorSlot`. */
export async function busy(button, errorSlot, fn, busyText) {
  const old = button.textContent;
  button.disabled = true;
  if (busyText) button.textContent = busyText;
  if (errorSlot) clear(errorSlot);
  try {
    return await fn();
  } catch (e) {
    if (!errorSlot) throw e;
    errorSlot.appendChild(errorBox(e));
    if (errorSlot.onApiError) errorSlot.onApiError(e);
    return undefined;
  } finally {
    button.disabled = false;
    if (busyText) button.textContent = old;
  }
}

/** Renders a tool's JSON Schema input as a readable argument table. */
export function schemaTable(schema, captionText) {
  const rows = [];
  collectArgs(schema, '', rows, 0);
  if (!rows.length) return h('p', { class: 'muted' }, 'No arguments.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'stack' },
    captionText ? h('caption', { class: 'visually-hidden' }, captionText) : null,
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Argument'), h('th', { scope: 'col' }, 'Type'), h('th', { scope: 'col' }, 'Required'), h('th', { scope: 'col' }, 'Description'))),
    h('tbody', {}, rows.map((r) => h('tr', {},
      h('td', { 'data-label': 'Argument' }, h('code', {}, r.name)),
      h('td', { 'data-label': 'Type' }, r.type),
      h('td', { 'data-label': 'Required' }, r.required ? 'required' : 'optional'),
      h('td', { 'data-label': 'Description' }, r.description || h('span', { class: 'muted' }, '—'))))),
  ));
}

function parseSchema(schema) {
  if (typeof schema === 'string') { try { return JSON.parse(schema); } catch { return {}; } }
  return schema || {};
}

function typeOf(s) {
  if (!s || typeof s !== 'object') return 'any';
  if (Array.isArray(s.enum)) return `one of ${s.enum.map((v) => JSON.stringify(v)).join(', ')}`;
  if ('const' in s) return `exactly ${JSON.stringify(s.const)}`;
  const alts = s.anyOf || s.oneOf;
  if (Array.isArray(alts)) return alts.map(typeOf).join(' or ');
  let t = Array.isArray(s.type) ? s.type.join(' or ') : s.type || (s.properties ? 'object' : 'any');
  if (t === 'array') t = `array of ${typeOf(s.items)}`;
  const extra = [];
  if (s.format) extra.push(s.format);
  if (s.minimum !== undefined) extra.push(`≥ ${s.minimum}`);
  if (s.maximum !== undefined) extra.push(`≤ ${s.maximum}`);
  if (s.minLength !== undefined) extra.push(`min length ${s.minLength}`);
  if (s.maxLength !== undefined) extra.push(`max length ${s.maxLength}`);
  if (s.default !== undefined) extra.push(`default ${JSON.stringify(s.default)}`);
  return extra.length ? `${t} (${extra.join(', ')})` : t;
}

function collectArgs(schemaIn, prefix, rows, depth) {
  const schema = parseSchema(schemaIn);
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  for (const [name, s] of Object.entries(props)) {
    const full = prefix ? `${prefix}.${name}` : name;
    rows.push({ name: full, type: typeOf(s), required: required.has(name), description: s?.description || s?.title || '' });
    if (depth < 3 && s && s.type === 'object' && s.properties) collectArgs(s, full, rows, depth + 1);
    if (depth < 3 && s && s.type === 'array' && s.items && s.items.properties) collectArgs(s.items, `${full}[]`, rows, depth + 1);
  }
}

export function toolList(tools, { headingLevel = 'h3' } = {}) {
  if (!tools || !tools.length) return empty('No tools.');
  return h('div', { class: 'tools' }, tools.map((t) => h('section', { class: 'tool', 'aria-label': `Tool ${t.name}`, dataset: { tool: t.name } },
    h(headingLevel, {}, t.name),
    t.description ? h('p', {}, t.description) : h('p', { class: 'muted' }, 'No description.'),
    annotations(t),
    schemaTable(t.inputSchema, `Arguments of ${t.name}`))));
}

function annotations(t) {
  const a = t.annotations;
  if (!a || typeof a !== 'object') return null;
  const tags = [];
  if (a.readOnlyHint) tags.push(h('span', { class: 'badge ok' }, 'read-only'));
  if (a.destructiveHint) tags.push(h('span', { class: 'badge bad' }, 'destructive'));
  if (a.idempotentHint) tags.push(h('span', { class: 'badge idle' }, 'idempotent'));
  if (a.openWorldHint) tags.push(h('span', { class: 'badge idle' }, 'calls the internet'));
  return tags.length ? h('div', { class: 'annotations' }, tags) : null;
}

/** A confirm dialog; resolves true/false. Uses <dialog> so focus is trapped and Esc cancels. */
export function confirmDialog(title, body, confirmText = 'Confirm', { danger = false } = {}) {
  return new Promise((resolve) => {
    const titleId = uid('dlg');
    const dlg = h('dialog', { 'aria-labelledby': titleId },
      h('h2', { id: titleId, style: 'margin-top:0' }, title), body,
      h('form', { method: 'dialog', class: 'actions' },
        h('button', { value: 'no', class: 'secondary' }, 'Cancel'),
        h('button', { value: 'yes', class: danger ? 'danger' : '' }, confirmText)));
    dlg.addEventListener('close', () => { resolve(dlg.returnValue === 'yes'); dlg.remove(); });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}
