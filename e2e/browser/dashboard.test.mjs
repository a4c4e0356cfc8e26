// The dashboard in Debian's Chromium against a running platform:
// sign in through a magic link, create a server with the wizard, watch the
// build reach live (dropping the WebSocket and reloading mid-build: the log
// must resume with no gap and no duplicate), see the tools and install
// snippets, redeploy the live version, then the audit log and settings; screenshots of every page go to
// e2e/artifacts/screenshots/.
//
//   cd e2e/browser && npm ci && BMM_URL=http://127.0.0.1:8080 BMM_MAGIC_LINK=… node --test
//
// BMM_MAGIC_LINK is a sign-in URL printed by `bmm auth magic-link --email E`;
// instead, BMM_BIN=path/to/bmm lets the test ask for one itself.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// playwright-core comes from this folder's lock file (`npm ci`); when a runner
// skipped that step, the test installs it (or uses e2e/node's copy).
async function loadPlaywright() {
  try { return await import('playwright-core'); } catch { /* not installed here */ }
  const sibling = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../node/node_modules/playwright-core/index.mjs');
  if (fs.existsSync(sibling)) return import(sibling);
  execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: path.dirname(fileURLToPath(import.meta.url)), stdio: 'inherit' });
  return import('playwright-core');
}

const here = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = process.env.BMM_SCREENSHOTS || path.resolve(here, '../artifacts/screenshots');
const BASE = (process.env.BMM_URL || '').replace(/\/+$/, '');
const CHROMIUM = process.env.BMM_CHROMIUM || '/usr/bin/chromium';
const BUILD_TIMEOUT = Number(process.env.BMM_BUILD_TIMEOUT_MS || 300_000);
const EMAIL = process.env.BMM_E2E_EMAIL || 'browser-e2e@example.com';

function magicLink() {
  if (process.env.BMM_MAGIC_LINK) return process.env.BMM_MAGIC_LINK;
  if (!process.env.BMM_BIN) return null;
  const out = execFileSync(process.env.BMM_BIN, ['auth', 'magic-link', '--email', EMAIL], { encoding: 'utf8' });
  const url = out.match(/https?:\/\/\S+/g)?.pop();
  if (!url) throw new Error(`\`bmm auth magic-link\` printed no URL:\n${out}`);
  return url;
}

let browser;
let context;
let page;
let userDataDir;
const pageErrors = [];
let shotNo = 0;

async function shot(name) {
  shotNo += 1;
  const file = path.join(SHOTS, `${String(shotNo).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Every form control has a label, images have alt, one h1, a main landmark, buttons have names. */
async function checkA11y(where) {
  const problems = await page.evaluate(() => {
    const out = [];
    const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (['hidden', 'submit', 'button', 'reset'].includes(el.type) || !visible(el) || el.getAttribute('aria-hidden') === 'true') continue;
      const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.closest('label');
      if (!named) out.push(`${el.tagName.toLowerCase()}[name=${el.name || '?'}] has no label`);
    }
    for (const img of document.querySelectorAll('img')) if (!img.hasAttribute('alt')) out.push(`img ${img.src} has no alt`);
    for (const b of document.querySelectorAll('button, a[href]')) {
      if (!visible(b)) continue;
      const name = (b.getAttribute('aria-label') || b.textContent || b.getAttribute('title') || '').trim();
      if (!name && !b.querySelector('img[alt]:not([alt=""])')) out.push(`${b.tagName.toLowerCase()} without an accessible name`);
    }
    const h1 = document.querySelectorAll('h1').length;
    if (h1 !== 1) out.push(`${h1} h1 elements (want exactly one)`);
    if (!document.querySelector('main')) out.push('no <main> landmark');
    if (!document.documentElement.lang) out.push('no lang on <html>');
    // Text contrast (WCAG AA): 4.5:1, or 3:1 for large text; disabled controls are exempt.
    const rgba = (c) => { const m = c.match(/[\d.]+/g) || [0, 0, 0, 0]; return [Number(m[0]), Number(m[1]), Number(m[2]), m[3] === undefined ? 1 : Number(m[3])]; };
    const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
    const bgOf = (el) => {
      for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
        const c = rgba(getComputedStyle(n).backgroundColor);
        if (c[3] > 0.5) return c;
      }
      return [255, 255, 255, 1];
    };
    const seen = new Set();
    for (const el of document.querySelectorAll('body *')) {
      if (!visible(el) || el.closest('[disabled], [aria-hidden="true"], .visually-hidden, noscript')) continue;
      const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
      if (!text) continue;
      const cs = getComputedStyle(el);
      const fg = rgba(cs.color);
      const bg = bgOf(el);
      const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      const ratio = (l1 + 0.05) / (l2 + 0.05);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
      const key = `${cs.color}|${bg}`;
      if (ratio < (large ? 3 : 4.5) && !seen.has(key)) { seen.add(key); out.push(`contrast ${ratio.toFixed(2)}:1 for "${text.slice(0, 30)}" (${cs.color} on rgb(${bg.slice(0, 3)}))`); }
    }
    const ids = new Map();
    for (const el of document.querySelectorAll('[id]')) ids.set(el.id, (ids.get(el.id) || 0) + 1);
    for (const [id, n] of ids) if (n > 1) out.push(`id "${id}" used ${n} times`);
    return out;
  });
  assert.deepEqual(problems, [], `accessibility problems on ${where}`);
}

async function h1Text() { return (await page.locator('h1').first().textContent()).trim(); }

async function gqlInPage(query, variables = {}) {
  return page.evaluate(async ([q, v]) => {
    const r = await fetch('/graphql', { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: q, variables: v }) });
    return r.json();
  }, [query, variables]);
}

async function renderedSeqs() {
  return page.$$eval('#build-log li[data-seq]', (lis) => lis.map((li) => Number(li.dataset.seq)));
}

function assertGapless(seqs, label) {
  const dupes = seqs.filter((s, i) => seqs.indexOf(s) !== i);
  assert.deepEqual(dupes, [], `${label}: duplicated log lines (seq)`);
  const sorted = [...seqs].sort((a, b) => a - b);
  assert.deepEqual(seqs, sorted, `${label}: log lines out of order`);
  for (let i = 1; i < sorted.length; i += 1) assert.equal(sorted[i], sorted[i - 1] + 1, `${label}: gap in the log between seq ${sorted[i - 1]} and ${sorted[i]}`);
}

before(async () => {
  if (!BASE) return;
  const { chromium } = await loadPlaywright();
  // Not emptied first: parallel runs (scripts/e2e.sh from several checkouts) share the folder.
  fs.mkdirSync(SHOTS, { recursive: true });
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bmm-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  browser = context.browser();
  page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    console.error(`[browser] ${m.text()}`);
    // The dashboard runs under a strict Content-Security-Policy: anything it refuses is a bug.
    if (/Content Security Policy/i.test(m.text())) pageErrors.push(`CSP violation: ${m.text()}`);
  });
  // The dashboard is served by the API with no CDN: any request elsewhere is a bug.
  const origin = new URL(BASE).origin;
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.origin === origin || u.protocol === 'data:' || u.protocol === 'blob:') return route.continue();
    pageErrors.push(`request outside the platform: ${u.href}`);
    return route.abort();
  });
});

after(async () => {
  if (context) await context.close();
  if (browser) await browser.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
});

test('dashboard: sign in, build a server through the wizard, see it live', { skip: !BASE && 'set BMM_URL (and BMM_MAGIC_LINK or BMM_BIN) to run against a platform' }, async (t) => {
  const link = magicLink();
  assert.ok(link, 'set BMM_MAGIC_LINK (from `bmm auth magic-link --email E`) or BMM_BIN');

  await t.test('signed out: the dashboard links to the sign-in page', async () => {
    await page.goto(`${BASE}/`);
    await page.getByRole('link', { name: 'Sign in with email' }).waitFor();
    assert.match(await h1Text(), /Sign in/);
    await checkA11y('the signed-out page');
    await shot('signed-out');
    const href = await page.getByRole('link', { name: 'Sign in with email' }).getAttribute('href');
    assert.ok(href.startsWith('/auth/sign-in'), `sign-in link goes to ${href}`);
    await page.goto(`${BASE}${href}`);
    await page.locator('input[type=email]').waitFor();
    await shot('sign-in');
  });

  await t.test('the magic link signs in', async () => {
    assert.equal(new URL(link).origin, new URL(BASE).origin, 'the magic link must point at BMM_URL (the session cookie is per origin)');
    await page.goto(link);
    // Some sign-in pages ask for a click before using the link (so mail scanners cannot).
    if (new URL(page.url()).pathname.startsWith('/auth/')) {
      const confirm = page.locator('form button[type=submit], form input[type=submit]').first();
      if (await confirm.count()) await Promise.all([page.waitForNavigation(), confirm.click()]);
    }
    await page.goto(`${BASE}/#/servers`);
    await page.locator('#main-nav:not([hidden])').waitFor();
    await page.locator('#account', { hasText: '@' }).waitFor();
    assert.equal(await h1Text(), 'Servers');
    await page.locator('#servers-table, .empty').first().waitFor();
    await checkA11y('servers');
    await shot('servers');
  });

  const serverName = `Echo e2e ${Date.now().toString(36)}`;
  let buildId;
  await t.test('wizard: describe → review the echo tool → build', async () => {
    await page.getByRole('link', { name: 'New server' }).first().click();
    await page.getByLabel('What should the server do?').fill('an echo tool');
    await checkA11y('wizard step 1');
    await shot('wizard-describe');
    await page.getByRole('button', { name: 'Find the tools' }).click();
    await page.locator('[data-tool="echo"]').waitFor({ timeout: 60_000 });
    await page.locator('[data-tool="echo"] table').waitFor();
    await checkA11y('wizard step 2');
    await shot('wizard-review');
    await page.getByLabel('Server name').fill(serverName);
    await page.getByRole('button', { name: 'Build this server' }).click();
    await page.waitForURL(/#\/builds\/[^/]+$/);
    buildId = decodeURIComponent(new URL(page.url()).hash.split('/').pop());
    assert.ok(buildId);
  });

  await t.test('build: live steps and log survive a reload and a dropped connection', async () => {
    const terminal = () => page.$eval('#build-status', (el) => ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(el.dataset.status));
    // Every buildEvents subscribe the page sends, to see it resume with `after`.
    const resumes = [];
    let recording = false;
    page.on('websocket', (sock) => sock.on('framesent', ({ payload }) => {
      try {
        const m = JSON.parse(String(payload));
        if (recording && m.type === 'subscribe' && /buildEvents/.test(m.payload?.query || '')) resumes.push(m.payload.variables?.after ?? null);
      } catch { /* not JSON */ }
    }));
    await page.locator('#build-log li[data-seq]').first().waitFor({ timeout: BUILD_TIMEOUT });

    // Reload as soon as the first line is in (builds from a cached bundle take
    // seconds): the page starts from the lines it kept and subscribes after the last one.
    const beforeReload = await renderedSeqs();
    const runningAtReload = !(await terminal());
    if (!runningAtReload) t.diagnostic('the build had already finished before the reload');
    recording = true;
    await page.reload();
    await page.locator('#build-log li[data-seq]').first().waitFor();
    assertGapless(await renderedSeqs(), 'right after the reload');
    await checkA11y('build page');
    await shot('build-running');

    // Drop the WebSocket: the client reconnects and resubscribes after the last seq.
    const beforeDrop = (await renderedSeqs()).length;
    if (await terminal()) t.diagnostic('the build had already finished before the dropped connection');
    await page.evaluate(() => window.__bmm.ws.drop());
    await page.waitForFunction((n) => document.querySelectorAll('#build-log li[data-seq]').length > n
      || ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(document.getElementById('build-status')?.dataset.status), beforeDrop, { timeout: BUILD_TIMEOUT });

    await page.locator('#build-status[data-status="SUCCEEDED"], #build-status[data-status="FAILED"], #build-status[data-status="CANCELLED"]').waitFor({ timeout: BUILD_TIMEOUT });
    const seqs = await renderedSeqs();
    assertGapless(seqs, 'at the end of the build');
    for (const s of beforeReload) assert.ok(seqs.includes(s), `line ${s} seen before the reload is gone`);
    t.diagnostic(`buildEvents subscriptions after the reload: after = ${JSON.stringify(resumes)}`);
    // (No subscribe at all means the page already had the whole log, ending included.)
    if (resumes.length) assert.ok(resumes[0] >= Math.max(...beforeReload), `after the reload the page resumes after line ${Math.max(...beforeReload)}: ${JSON.stringify(resumes)}`);
    assert.ok(resumes.slice(1).every((a) => a > 0), `after the dropped connection the page resubscribes after its last line: ${JSON.stringify(resumes)}`);
    const status = await page.$eval('#build-status', (el) => el.dataset.status);

    // What is rendered is exactly what the API stored.
    const storedSeqs = [];
    for (;;) {
      const page1 = await gqlInPage('query($id: ID!, $after: Int) { build(id: $id) { events(after: $after, limit: 500) { seq } } }', { id: buildId, after: storedSeqs.at(-1) ?? 0 });
      assert.ok(!page1.errors, JSON.stringify(page1.errors));
      const got = page1.data.build.events.map((e) => e.seq);
      storedSeqs.push(...got);
      if (got.length < 500) break;
    }
    assert.deepEqual(seqs, storedSeqs, 'rendered log differs from the stored events');
    const kinds = await page.$$eval('#build-log li[data-seq]', (lis) => lis.map((li) => li.dataset.kind));
    assert.equal(kinds.filter((k) => k.startsWith('BUILD_')).length, 1, 'exactly one terminal event');
    if (status !== 'SUCCEEDED') {
      await shot('build-failed');
      const log = await page.$$eval('#build-log li', (lis) => lis.map((li) => li.textContent).join('\n'));
      assert.fail(`the build ended ${status}:\n${log}`);
    }
    for (const step of ['generate', 'check', 'bundle', 'deploy', 'smoke', 'cutover']) {
      assert.equal(await page.$eval(`#build-steps [data-step="${step}"]`, (el) => el.dataset.status), 'succeeded', `step ${step}`);
    }
    await page.locator('#server-live #install-snippets [data-client]').first().waitFor();
    await checkA11y('finished build');
    await shot('build-live');
  });

  await t.test('server page: status, URL, tools, install snippets, logs, connections, versions', async () => {
    await page.getByRole('link', { name: 'Open the server page' }).click();
    await page.waitForURL(/#\/servers\/[^/]+$/);
    await page.locator('#server-tools [data-tool="echo"]').waitFor();
    await page.locator('#install-snippets [data-client]').first().waitFor();
    assert.equal(await h1Text(), serverName);
    assert.match(await page.textContent('#server-status'), /live/i);
    const url = (await page.textContent('#server-url code')).trim();
    assert.match(url, /\/s\/[^/]+\/mcp$/);
    const snippets = await page.$$eval('#install-snippets [data-client]', (els) => els.map((e) => e.textContent));
    assert.ok(snippets.length >= 5, `${snippets.length} install snippets`);
    assert.ok(snippets.every((s) => s.includes(url) || /chatgpt/i.test(s)), 'install snippets name the server URL');
    await checkA11y('server overview');
    await shot('server');

    const serverPath = new URL(page.url()).hash;
    for (const [tab, ready] of [['logs', '#server-logs'], ['connections', 'h2:has-text("Connections")'], ['versions', '#versions-table'], ['secrets', 'h2:has-text("Secrets")'], ['iterate', 'textarea[name=instruction]'], ['delete', 'input[name=confirm-name]']]) {
      await page.goto(`${BASE}/${serverPath}/${tab}`);
      await page.locator(ready).first().waitFor();
      await checkA11y(`server ${tab}`);
      await shot(`server-${tab}`);
    }
    await page.goto(`${BASE}/${serverPath}/versions`);
    await page.locator('#builds-table a[target=_blank]').first().waitFor();
    const temporal = await page.$$eval('#builds-table a[target=_blank]', (as) => as.map((a) => a.href));
    assert.ok(temporal.length >= 1 && temporal.every((h) => h.includes(buildId) || h.includes('workflows')), `Temporal links: ${temporal}`);

    await page.setViewportSize({ width: 360, height: 740 });
    await page.goto(`${BASE}/${serverPath}`);
    await page.locator('#server-tools [data-tool="echo"]').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow}px at 360px wide`);
    await shot('server-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test('redeploy: the server page builds the live version again', async () => {
    await page.goto(`${BASE}/#/servers`);
    await page.getByRole('link', { name: serverName }).click();
    await page.waitForURL(/#\/servers\/[^/]+$/);
    await page.getByRole('button', { name: 'Redeploy', exact: true }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    await checkA11y('redeploy dialog');
    await dialog.getByRole('button', { name: 'Redeploy', exact: true }).click();
    await page.waitForURL(/#\/builds\/[^/]+$/);
    const redeployId = decodeURIComponent(new URL(page.url()).hash.split('/').pop());
    assert.notEqual(redeployId, buildId, 'a new build');
    await page.locator('#build-status[data-status="SUCCEEDED"], #build-status[data-status="FAILED"], #build-status[data-status="CANCELLED"]').waitFor({ timeout: BUILD_TIMEOUT });
    const status = await page.$eval('#build-status', (el) => el.dataset.status);
    const res = await gqlInPage('query($id: ID!) { build(id: $id) { version events(after: 0, limit: 100) { kind message } } }', { id: redeployId });
    assert.ok(!res.errors, JSON.stringify(res.errors));
    assert.equal(status, 'SUCCEEDED', res.data.build.events.map((e) => `${e.kind} ${e.message}`).join('\n'));
    assert.equal(res.data.build.version, 1, 'the live version, built again');
    await shot('redeployed');
  });

  await t.test('audit log and settings', async () => {
    await page.goto(`${BASE}/#/audit`);
    await page.locator('#audit-table tbody tr').first().waitFor();
    await checkA11y('audit');
    await shot('audit');

    await page.goto(`${BASE}/#/settings`);
    await page.locator('#api-keys').waitFor();
    await page.getByLabel('Name of the new key').fill('browser e2e');
    await page.getByRole('button', { name: 'Create key' }).click();
    const key = (await page.locator('#new-api-key code').first().textContent()).trim();
    assert.match(key, /^bmm_/);
    await checkA11y('settings');
    await shot('settings');
    const row = page.locator('#api-keys-table tbody tr', { hasText: 'browser e2e' }).first();
    await row.getByRole('button', { name: /Revoke/ }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click();
    await row.locator('.badge', { hasText: 'revoked' }).waitFor();
  });

  await t.test('delete asks for the server name', async () => {
    await page.goto(`${BASE}/#/servers`);
    await page.getByRole('link', { name: serverName }).click();
    await page.waitForURL(/#\/servers\/[^/]+$/);
    await page.goto(`${page.url()}/delete`);
    const btn = page.getByRole('button', { name: 'Delete this server' });
    await page.locator('input[name=confirm-name]').fill('not the name');
    assert.equal(await btn.isDisabled(), true);
    await page.locator('input[name=confirm-name]').fill(serverName);
    await btn.click();
    await page.waitForURL(/#\/servers$/);
    await page.locator('#servers-table, .empty').first().waitFor();
    assert.equal(await page.getByRole('link', { name: serverName }).count(), 0);
  });

  assert.deepEqual(pageErrors, [], 'errors in the page');
});
