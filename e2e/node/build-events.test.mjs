// Subscribes to a real build's events through the npm `graphql-ws` client
// (protocol graphql-transport-ws) and checks them: every seq from 1 in order
// with no gap or duplicate, ending on a terminal event; a resumed
// subscription (`after`) gets exactly the rest; a bad key is refused.
//
// Environment:
//   BMM_API_URL   the platform origin, e.g. http://127.0.0.1:8080
//   BMM_API_KEY   an API key (bmm_…) of the build's org
//   BMM_BUILD_ID  the build to follow (it may still be running)
//   BMM_TIMEOUT_MS  how long the build may take (default 15 minutes)
//
// Run: npm ci && node --test

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const TERMINAL = new Set(['BUILD_SUCCEEDED', 'BUILD_FAILED', 'BUILD_CANCELLED']);
const QUERY = `subscription ($id: ID!, $after: Int) {
  buildEvents(buildId: $id, after: $after) { seq step kind message at }
}`;

function env(name) {
  const v = process.env[name];
  assert.ok(v && v.trim(), `set ${name} (see the header of this file)`);
  return v.trim();
}

const apiUrl = () => env('BMM_API_URL').replace(/\/+$/, '');
const wsUrl = () => apiUrl().replace(/^http/, 'ws') + '/graphql';
const timeoutMs = Number(process.env.BMM_TIMEOUT_MS || 15 * 60 * 1000);

function client(key) {
  return createClient({
    url: wsUrl(),
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    retryAttempts: 0,
    lazy: true,
  });
}

/** Every event of the subscription until it completes; rejects on an error or a timeout. */
function follow(key, buildId, after) {
  const c = client(key);
  const events = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      dispose();
      reject(new Error(`no terminal event within ${timeoutMs} ms; got ${events.length} events`));
    }, timeoutMs);
    const dispose = c.subscribe(
      { query: QUERY, variables: { id: buildId, after } },
      {
        next: (msg) => {
          if (msg.errors) {
            clearTimeout(timer);
            reject(new Error(`subscription error: ${JSON.stringify(msg.errors)}`));
            return;
          }
          events.push(msg.data.buildEvents);
        },
        error: (err) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(`closed: ${err?.code} ${err?.reason ?? JSON.stringify(err)}`));
        },
        complete: () => {
          clearTimeout(timer);
          resolve(events);
        },
      },
    );
  }).finally(() => c.dispose());
}

function checkOrdered(events, from) {
  assert.ok(events.length > 0, 'at least one event');
  events.forEach((e, i) => assert.equal(e.seq, from + i + 1, `event ${i} has seq ${e.seq}, expected ${from + i + 1}`));
  const last = events[events.length - 1];
  assert.ok(TERMINAL.has(last.kind), `the stream ends on a terminal event, not ${last.kind}`);
  events.slice(0, -1).forEach((e) => assert.ok(!TERMINAL.has(e.kind), `terminal event ${e.kind} before the end`));
}

let firstRun;

test('buildEvents streams every event of the build in order and completes on the terminal event', async () => {
  const events = await follow(env('BMM_API_KEY'), env('BMM_BUILD_ID'), 0);
  checkOrdered(events, 0);
  for (const e of events) {
    assert.equal(typeof e.step, 'string');
    assert.equal(typeof e.message, 'string');
    assert.ok(!Number.isNaN(Date.parse(e.at)), `at is a timestamp: ${e.at}`);
  }
  firstRun = events;
  console.log(`${events.length} events, ending with ${events[events.length - 1].kind}`);
});

test('resuming with after gets exactly the remaining events', async () => {
  assert.ok(firstRun, 'the first test ran');
  const cut = Math.floor(firstRun.length / 2);
  const rest = await follow(env('BMM_API_KEY'), env('BMM_BUILD_ID'), cut);
  checkOrdered(rest, cut);
  assert.deepEqual(
    rest.map((e) => [e.seq, e.kind, e.message]),
    firstRun.slice(cut).map((e) => [e.seq, e.kind, e.message]),
  );
});

test('a bad API key is refused at connection_init', async () => {
  await assert.rejects(follow('bmm_' + 'x'.repeat(43), env('BMM_BUILD_ID'), 0), (err) => {
    assert.match(String(err.message ?? err), /UNAUTHENTICATED|closed|4\d\d\d|1002/);
    return true;
  });
});
