// GraphQL client: queries and mutations over POST /graphql with the session
// cookie, subscriptions over a hand-written `graphql-transport-ws` client
// (no npm runtime dependencies; the dashboard is served as plain files).

/** An error from the API (or from reaching it), with the `extensions.code`. */
export class ApiError extends Error {
  constructor(errors, data = null) {
    const list = Array.isArray(errors) && errors.length ? errors : [{ message: 'Unknown error' }];
    super(list.map((e) => e.message).join('; '));
    this.name = 'ApiError';
    this.errors = list;
    this.code = list[0]?.extensions?.code || null;
    this.data = data;
  }
}

const ENDPOINT = '/graphql';

/** Runs a query or mutation; resolves to `data`, rejects with an ApiError. */
export async function gql(query, variables = {}) {
  let res;
  try {
    res = await fetch(ENDPOINT, {
      method: 'POST',
      credentials: 'same-origin',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new ApiError([{ message: `Could not reach the API (${e.message}). Check your connection and try again.`, extensions: { code: 'NETWORK' } }]);
  }
  let body = null;
  const text = await res.text();
  try { body = JSON.parse(text); } catch { /* not JSON: reported below */ }
  if (!body || typeof body !== 'object') {
    throw new ApiError([{ message: `The API answered ${res.status} ${res.statusText || ''} without a GraphQL response.`.replace(/\s+\./, '.'), extensions: { code: res.status === 429 ? 'RATE_LIMITED' : `HTTP_${res.status}` } }]);
  }
  if (Array.isArray(body.errors) && body.errors.length) throw new ApiError(body.errors, body.data ?? null);
  if (!res.ok) throw new ApiError([{ message: `The API answered ${res.status}.`, extensions: { code: `HTTP_${res.status}` } }]);
  return body.data;
}

// ---------------------------------------------------------------------------
// graphql-transport-ws (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md)

const FATAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4406, 4409, 4429, 4499, 1002, 1003]);
const CLOSE_MESSAGES = {
  4400: 'The API refused a malformed subscription message.',
  4401: 'You are not signed in (the subscription was refused).',
  4403: 'You are not allowed to subscribe to this.',
  4406: 'The API does not speak the graphql-transport-ws protocol.',
  4408: 'The API did not acknowledge the connection in time.',
  4429: 'Too many connection attempts.',
  4500: 'The API closed the subscription after an internal error.',
};

/**
 * One WebSocket shared by every subscription of the page. Reconnects with
 * backoff when the connection drops while subscriptions are active; each
 * subscription's variables are recomputed on resubscribe, so a build log can
 * resume `after` the last sequence number it has seen.
 */
export class WsClient {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.acked = false;
    this.subs = new Map(); // local key -> { payloadFn, sink, opId }
    this.nextKey = 1;
    this.nextOp = 1;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.idleTimer = null;
    this.listeners = new Set();
    this.state = 'idle'; // idle | connecting | connected | reconnecting | failed
  }

  onState(fn) { this.listeners.add(fn); fn(this.state); return () => this.listeners.delete(fn); }

  setState(state, detail = '') {
    this.state = state;
    for (const fn of this.listeners) fn(state, detail);
  }

  /**
   * Subscribes. `payload` is `{query, variables}` or a function returning it
   * (called on every (re)subscribe). Sink: { next(data), error(ApiError), complete() }.
   * Returns an unsubscribe function.
   */
  subscribe(payload, sink) {
    const key = this.nextKey++;
    const payloadFn = typeof payload === 'function' ? payload : () => payload;
    this.subs.set(key, { payloadFn, sink, opId: null });
    clearTimeout(this.idleTimer);
    if (this.ws && this.acked) this.sendSubscribe(key);
    else this.connect();
    return () => this.unsubscribe(key);
  }

  unsubscribe(key) {
    const sub = this.subs.get(key);
    if (!sub) return;
    this.subs.delete(key);
    if (sub.opId && this.ws && this.acked) this.send({ id: sub.opId, type: 'complete' });
    if (this.subs.size === 0) {
      // Keep the socket briefly: the next page usually subscribes again.
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => { if (this.subs.size === 0) this.close(); }, 5000);
    }
  }

  /** Closes the socket as if the network dropped (the client reconnects). Used by tests. */
  drop() { if (this.ws) this.ws.close(4000, 'dropped by client'); }

  close() {
    clearTimeout(this.retryTimer);
    this.stopKeepalive();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      try { ws.close(1000, 'Normal Closure'); } catch { /* already closed */ }
    }
    this.acked = false;
    this.setState('idle');
  }

  connect() {
    if (this.ws) return;
    clearTimeout(this.retryTimer);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = this.url.startsWith('ws') ? this.url : `${proto}//${location.host}${this.url}`;
    this.setState(this.attempt ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(url, 'graphql-transport-ws');
    } catch (e) {
      this.scheduleReconnect(`could not open the WebSocket: ${e.message}`);
      return;
    }
    this.ws = ws;
    this.acked = false;
    const ackTimer = setTimeout(() => { if (this.ws === ws && !this.acked) ws.close(4408, 'Connection acknowledgement timeout'); }, 10000);
    ws.onopen = () => {
      // The session cookie authenticates the upgrade; the payload stays empty.
      this.send({ type: 'connection_init', payload: {} });
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { ws.close(4400, 'Invalid message'); return; }
      this.handle(msg, ws, ackTimer);
    };
    ws.onerror = () => { /* followed by onclose, which decides */ };
    ws.onclose = (ev) => {
      clearTimeout(ackTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      this.acked = false;
      this.stopKeepalive();
      for (const sub of this.subs.values()) sub.opId = null;
      if (this.subs.size === 0) { this.setState('idle'); return; }
      if (FATAL_CLOSE_CODES.has(ev.code)) {
        // The API closes with 4403 and a reason such as "UNAUTHENTICATED: …" when connection_init is refused.
        const reason = (ev.reason || '').trim();
        const named = reason.match(/^(UNAUTHENTICATED|FORBIDDEN|RATE_LIMITED)\b/);
        const wsCode = named ? named[1] : ev.code === 4401 ? 'UNAUTHENTICATED' : ev.code === 4403 ? 'FORBIDDEN' : `WS_${ev.code}`;
        const message = reason ? `${CLOSE_MESSAGES[ev.code] || 'The live connection was closed.'} (${reason})` : CLOSE_MESSAGES[ev.code] || `The live connection was closed (${ev.code}).`;
        const err = new ApiError([{ message, extensions: { code: wsCode } }]);
        const sinks = [...this.subs.values()].map((s) => s.sink);
        this.subs.clear();
        this.setState('failed', err.message);
        for (const sink of sinks) sink.error?.(err);
        return;
      }
      this.scheduleReconnect(CLOSE_MESSAGES[ev.code] || (ev.reason ? ev.reason : 'connection lost'));
    };
  }

  scheduleReconnect(reason) {
    this.attempt += 1;
    // 0.5 s, 1 s, 2 s, 4 s … capped at 15 s, with jitter so tabs do not stampede.
    const base = Math.min(15000, 500 * 2 ** Math.min(this.attempt - 1, 5));
    const delay = base / 2 + Math.random() * base / 2;
    this.setState('reconnecting', `${reason}; retrying in ${Math.ceil(delay / 1000)} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  handle(msg, ws, ackTimer) {
    switch (msg.type) {
      case 'connection_ack':
        clearTimeout(ackTimer);
        this.acked = true;
        this.attempt = 0;
        this.setState('connected');
        this.startKeepalive(ws);
        for (const key of this.subs.keys()) this.sendSubscribe(key);
        break;
      case 'ping':
        this.send({ type: 'pong' });
        break;
      case 'pong':
        clearTimeout(this.pongTimer);
        break;
      case 'next': {
        const sub = this.findByOp(msg.id);
        if (!sub) return;
        const result = msg.payload || {};
        if (Array.isArray(result.errors) && result.errors.length) {
          sub.sink.error?.(new ApiError(result.errors, result.data ?? null));
          if (!result.data) return;
        }
        if (result.data) sub.sink.next?.(result.data);
        break;
      }
      case 'error': {
        const entry = this.findEntryByOp(msg.id);
        if (!entry) return;
        this.subs.delete(entry[0]);
        entry[1].sink.error?.(new ApiError(Array.isArray(msg.payload) ? msg.payload : [{ message: 'Subscription failed' }]));
        break;
      }
      case 'complete': {
        const entry = this.findEntryByOp(msg.id);
        if (!entry) return;
        this.subs.delete(entry[0]);
        entry[1].sink.complete?.();
        break;
      }
      default:
        break;
    }
  }

  sendSubscribe(key) {
    const sub = this.subs.get(key);
    if (!sub) return;
    const opId = String(this.nextOp++);
    sub.opId = opId;
    const { query, variables } = sub.payloadFn();
    this.send({ id: opId, type: 'subscribe', payload: { query, variables } });
  }

  findEntryByOp(opId) {
    for (const entry of this.subs.entries()) if (entry[1].opId === opId) return entry;
    return null;
  }

  findByOp(opId) { return this.findEntryByOp(opId)?.[1] || null; }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  // A connection that silently died (laptop sleep, proxy timeout) is noticed
  // by a ping that gets no pong, and replaced.
  startKeepalive(ws) {
    this.stopKeepalive();
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws) return;
      this.send({ type: 'ping' });
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => { if (this.ws === ws) ws.close(4000, 'no pong'); }, 10000);
    }, 20000);
  }

  stopKeepalive() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}

export const ws = new WsClient(ENDPOINT);
