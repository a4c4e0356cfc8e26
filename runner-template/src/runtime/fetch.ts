// The only network access handler code gets: https to the spec's allowed hosts.
// The caller's access token is never forwarded (it is not even in the context),
// and redirects are followed by hand so each hop is checked again.
import type { ToolFetch } from "./types.js";

const MAX_REDIRECTS = 5;
const DEFAULT_TIMEOUT_MS = 30_000;

export class FetchNotAllowed extends Error {}

/** `api.example.com` and `api.example.com:443` are the same https host. */
function normalizeHost(host: string): string {
  const h = host.toLowerCase();
  return h.endsWith(":443") ? h.slice(0, -4) : h;
}

export function createToolFetch(allowedHosts: readonly string[]): ToolFetch {
  const allowed = new Set(allowedHosts.map(normalizeHost));

  const check = (url: URL): void => {
    if (url.protocol !== "https:") throw new FetchNotAllowed(`only https URLs may be fetched, not ${url.protocol}//${url.host}`);
    if (url.username || url.password) throw new FetchNotAllowed("URLs with user info may not be fetched");
    // URL.host omits the default port and lower-cases the name.
    if (!allowed.has(normalizeHost(url.host))) {
      throw new FetchNotAllowed(
        `host ${url.host} is not in this server's allowed hosts (${[...allowed].join(", ") || "none"})`,
      );
    }
  };

  return async (input, init = {}) => {
    let url = new URL(typeof input === "string" ? input : input.href);
    check(url);
    const signal = init.signal ?? AbortSignal.timeout(DEFAULT_TIMEOUT_MS);
    let method = (init.method ?? "GET").toUpperCase();
    let body = init.body;
    const headers = new Headers(init.headers);
    for (let hop = 0; ; hop++) {
      const res = await fetch(url, { ...init, method, body, headers, signal, redirect: "manual" });
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || location === null || init.redirect === "manual") return res;
      if (init.redirect === "error") throw new FetchNotAllowed(`redirected to ${location}`);
      if (hop >= MAX_REDIRECTS) throw new FetchNotAllowed(`more than ${MAX_REDIRECTS} redirects`);
      await res.body?.cancel();
      const next = new URL(location, url);
      check(next);
      // Credentials the handler set for one host must not follow a redirect to another.
      if (normalizeHost(next.host) !== normalizeHost(url.host)) {
        headers.delete("authorization");
        headers.delete("cookie");
        headers.delete("proxy-authorization");
      }
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
        method = "GET";
        body = undefined;
        headers.delete("content-type");
      }
      url = next;
    }
  };
}
