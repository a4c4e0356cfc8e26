// New server wizard: (1) describe or bring an OpenAPI document → previewServer;
// (2) review the tools and fill in only the credentials the preview asks for;
// (3) createServer, then the build page (#/builds/<id>) shows live progress.
import { gql } from '../graphql.js';
import { PREVIEW_SERVER, CREATE_SERVER } from '../queries.js';
import { h, replace, pageHead, field, busy, toolList, uid, markInvalid } from '../ui.js';
import { navigate } from '../nav.js';

const STORE = 'bmm.wizard';

function load() {
  try { return JSON.parse(sessionStorage.getItem(STORE)) || {}; } catch { return {}; }
}
function save(state) {
  try { sessionStorage.setItem(STORE, JSON.stringify(state)); } catch { /* private mode: keep in memory */ }
}

export function stepsIndicator(active) {
  const names = ['Describe', 'Review', 'Build'];
  return h('ol', { class: 'steps-indicator', 'aria-label': 'Steps' },
    names.map((n, i) => h('li', { 'aria-current': i === active ? 'step' : null }, n)));
}

export async function render(main, ctx, _params, query) {
  const state = load();
  // A preview's cache time is a few minutes; an older one is still built
  // exactly as reviewed (the API keeps its spec for a day).
  if (query.get('step') === 'review' && state.preview) renderReview(main, ctx, state);
  else renderDescribe(main, ctx, state);
}

function renderDescribe(main, ctx, state) {
  const mode = state.mode || 'words';
  const errors = h('div');
  const description = h('textarea', { name: 'description', rows: 6, placeholder: 'For example: an echo tool that repeats what it is given, and a tool that looks up the weather for a city using the Open-Meteo API.' });
  description.value = state.description || '';
  const openapi = h('textarea', { name: 'openapi', class: 'code', rows: 12, spellcheck: 'false', placeholder: 'openapi: 3.1.0\ninfo:\n  title: …' });
  openapi.value = state.openapi || '';
  const fileStatus = h('p', { class: 'hint', 'aria-live': 'polite' });
  const file = h('input', { type: 'file', name: 'openapi-file', accept: '.json,.yaml,.yml,application/json,application/yaml,text/yaml' });
  file.addEventListener('change', async () => {
    const f = file.files?.[0];
    if (!f) return;
    if (f.size > 5 * 1024 * 1024) { fileStatus.textContent = `${f.name} is larger than 5 MB; that is too big for one server.`; return; }
    openapi.value = await f.text();
    fileStatus.textContent = `Loaded ${f.name} (${Math.ceil(f.size / 1024)} KB) into the text box below.`;
  });

  const wordsPanel = h('div', { id: 'panel-words' },
    field('What should the server do?', description, { hint: 'Describe the tools in plain words: what each one does, what it needs, which service it talks to.', required: true }));
  const openapiPanel = h('div', { id: 'panel-openapi' },
    field('OpenAPI document (JSON or YAML file)', file, { hint: 'OpenAPI 3.0 or 3.1. Each operation becomes a tool.' }),
    fileStatus,
    field('…or paste the document', openapi),
    field('Anything to add? (optional)', (() => { const t = h('textarea', { name: 'notes', rows: 3 }); t.value = state.notes || ''; return t; })()));

  const radios = ['words', 'openapi'].map((m) => h('label', {},
    h('input', { type: 'radio', name: 'mode', value: m, checked: mode === m, onchange: () => show(m) }),
    m === 'words' ? 'Describe it in words' : 'Import an OpenAPI document'));
  function show(m) {
    wordsPanel.hidden = m !== 'words';
    openapiPanel.hidden = m !== 'openapi';
    description.required = m === 'words';
  }
  show(mode);

  const submit = h('button', { type: 'submit' }, 'Find the tools');
  const form = h('form', { class: 'card', novalidate: true },
    h('fieldset', {}, h('legend', {}, 'Start from'), h('div', { class: 'radio-row' }, radios)),
    wordsPanel, openapiPanel, errors,
    h('div', { class: 'actions' }, submit,
      h('span', { class: 'hint', id: uid('h') }, 'Nothing is built yet: the next step shows the tools for you to review.')));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const m = form.querySelector('input[name=mode]:checked').value;
    const notes = form.querySelector('textarea[name=notes]').value.trim();
    const input = m === 'words'
      ? { description: description.value.trim() }
      : { openapi: openapi.value, description: notes };
    errors.textContent = '';
    if (m === 'words' && !input.description) {
      errors.appendChild(h('div', { class: 'error-box', role: 'alert' }, 'Describe what the server should do first.'));
      description.setAttribute('aria-invalid', 'true');
      description.focus();
      return;
    }
    if (m === 'openapi' && !openapi.value.trim()) {
      errors.appendChild(h('div', { class: 'error-box', role: 'alert' }, 'Choose an OpenAPI file or paste the document first.'));
      file.focus();
      return;
    }
    errors.onApiError = (err) => markInvalid(err, { 'input.description': m === 'words' ? description : form.querySelector('textarea[name=notes]'), 'input.openapi': openapi });
    busy(submit, errors, async () => {
      const data = await gql(PREVIEW_SERVER, { input });
      const next = { mode: m, description: description.value, openapi: openapi.value, notes, preview: data.previewServer, previewAt: Date.now() };
      save(next);
      if (ctx.alive) navigate('/new?step=review');
    }, 'Reading your description…');
  });

  replace(main,
    pageHead('New server'),
    stepsIndicator(0),
    h('p', { class: 'lede' }, 'Say what tools you want, or bring an OpenAPI document. You review the tools before anything is built.'),
    form);
}

function renderReview(main, ctx, state) {
  const preview = state.preview;
  const errors = h('div');
  const creds = preview.credentials || [];
  const name = h('input', { type: 'text', name: 'name', autocomplete: 'off', maxlength: 80 });
  name.value = state.name || preview.name || '';
  const credInputs = creds.map((c) => {
    const input = h('input', { type: 'password', name: `credential-${c.key}`, autocomplete: 'new-password', spellcheck: 'false', dataset: { key: c.key } });
    const hint = h('span', {}, c.description ? `${c.description} ` : '', c.usedIn ? `Used by ${c.usedIn}. ` : '',
      'Stored encrypted as ', h('code', {}, c.key), '; you can replace it later, it is never shown again.');
    return { c, input, el: field(c.label || c.key, input, { hint, required: c.required !== false }) };
  });

  const submit = h('button', { type: 'submit' }, 'Build this server');
  const back = h('a', { class: 'button secondary', href: '#/new' }, 'Back');
  const form = h('form', { novalidate: true },
    h('section', { class: 'card', 'aria-labelledby': 'tools-h' },
      h('h2', { id: 'tools-h' }, `Tools found (${(preview.tools || []).length})`),
      preview.generator ? h('p', { class: 'muted' }, 'Made by the ', h('strong', {}, String(preview.generator)), ' generator.') : null,
      (preview.allowedHosts || []).length ? h('p', { class: 'muted' }, 'It may call: ', preview.allowedHosts.map((x, i) => [i ? ', ' : '', h('code', {}, x)])) : null,
      toolList(preview.tools)),
    (preview.warnings || []).length ? h('div', { class: 'warning-box', role: 'note' }, h('strong', {}, 'Warnings'), h('ul', {}, preview.warnings.map((w) => h('li', {}, w)))) : null,
    h('section', { class: 'card', 'aria-labelledby': 'setup-h' },
      h('h2', { id: 'setup-h' }, 'Name and credentials'),
      field('Server name', name, { hint: 'Shown in your dashboard and to the people who connect.', required: true }),
      creds.length
        ? h('fieldset', {}, h('legend', {}, 'Credentials this server needs'), credInputs.map((x) => x.el))
        : h('p', { class: 'muted', id: 'no-credentials' }, 'These tools need no credentials.')),
    errors,
    h('div', { class: 'actions' }, back, submit));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    errors.textContent = '';
    const missing = [];
    if (!name.value.trim()) missing.push(name);
    for (const { c, input } of credInputs) if (c.required !== false && !input.value) missing.push(input);
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    if (missing.length) {
      for (const el of missing) el.setAttribute('aria-invalid', 'true');
      errors.appendChild(h('div', { class: 'error-box', role: 'alert' }, `Fill in: ${missing.map((el) => form.querySelector(`label[for="${el.id}"]`)?.firstChild?.textContent || el.name).join(', ')}.`));
      missing[0].focus();
      return;
    }
    state.name = name.value;
    save({ ...state, preview });
    const given = credInputs.filter((x) => x.input.value);
    const byField = { 'input.name': name };
    given.forEach((x, i) => { byField[`input.credentials[${i}]`] = x.input; });
    if (credInputs[0]) byField['input.credentials'] = credInputs[0].input;
    errors.onApiError = (err) => markInvalid(err, byField);
    busy(submit, errors, async () => {
      const input = {
        previewId: preview.id,
        name: name.value.trim(),
        credentials: given.map((x) => ({ key: x.c.key, value: x.input.value })),
      };
      const data = await gql(CREATE_SERVER, { input });
      sessionStorage.removeItem(STORE);
      // The build page shows the wizard's steps only for the build the wizard started.
      try { sessionStorage.setItem('bmm.wizard.build', data.createServer.build.id); } catch { /* private mode */ }
      if (ctx.alive) navigate(`/builds/${encodeURIComponent(data.createServer.build.id)}`);
    }, 'Starting the build…');
  });

  replace(main,
    pageHead('New server'),
    stepsIndicator(1),
    h('p', { class: 'lede' }, 'Check the tools, then give the server a name and the credentials it needs.'),
    form);
}
