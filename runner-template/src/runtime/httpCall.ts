// The declarative `http` handler: a templated HTTP call. `{name}` is replaced by
// the argument of that name and `{{credentials.KEY}}` by a credential, in one
// pass, so a value is never itself expanded again.
import type { HttpCallDefinition, ToolArgs, ToolContext } from "./types.js";

const PLACEHOLDER = /\{\{credentials\.([A-Z][A-Z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}/g;
const MAX_RESPONSE_BYTES = 1_000_000;

function stringify(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** Names of the arguments a template mentions. */
function argsIn(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].flatMap((m) => (m[2] ? [m[2]] : []));
}

function expand(
  template: string,
  args: ToolArgs,
  ctx: ToolContext,
  encode: (s: string) => string,
  where: string,
): string {
  return template.replace(PLACEHOLDER, (_all, key: string | undefined, name: string | undefined) => {
    if (key) return encode(ctx.credentials[key]);
    const value = args[name as string];
    if (value === undefined || value === null) throw new Error(`argument ${name} is required for the ${where}`);
    return encode(stringify(value));
  });
}

export async function runHttpCall(call: HttpCallDefinition, args: ToolArgs, ctx: ToolContext): Promise<unknown> {
  const url = new URL(expand(call.url, args, ctx, encodeURIComponent, "URL"));
  const used = new Set<string>(argsIn(call.url));

  for (const [name, template] of Object.entries(call.query)) {
    argsIn(template).forEach((a) => used.add(a));
    // A query parameter whose only content is an absent optional argument is left out.
    const only = /^\{([A-Za-z_][A-Za-z0-9_-]*)\}$/.exec(template);
    if (only && (args[only[1]] === undefined || args[only[1]] === null)) continue;
    url.searchParams.append(name, expand(template, args, ctx, (s) => s, `query parameter ${name}`));
  }

  const headers = new Headers();
  for (const [name, template] of Object.entries(call.headers)) {
    argsIn(template).forEach((a) => used.add(a));
    const only = /^\{([A-Za-z_][A-Za-z0-9_-]*)\}$/.exec(template);
    if (only && (args[only[1]] === undefined || args[only[1]] === null)) continue;
    headers.set(name, expand(template, args, ctx, (s) => s, `header ${name}`));
  }

  let body: string | undefined;
  if (call.method !== "GET" && call.method !== "DELETE") {
    const picked: Record<string, unknown> = {};
    const names = call.bodyFromArgs ? Object.keys(args).filter((n) => !used.has(n)) : call.bodyArgs;
    for (const name of names) if (args[name] !== undefined) picked[name] = args[name];
    if (call.bodyFromArgs || call.bodyArgs.length > 0) {
      body = JSON.stringify(picked);
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
    }
  }
  if (!headers.has("accept")) headers.set("accept", "application/json, text/plain;q=0.9, */*;q=0.5");

  const res = await ctx.fetch(url, { method: call.method, headers, body, signal: ctx.signal });
  const buf = new Uint8Array(await res.arrayBuffer());
  const text = new TextDecoder().decode(buf.subarray(0, MAX_RESPONSE_BYTES));
  const truncated = buf.byteLength > MAX_RESPONSE_BYTES;
  if (!res.ok) {
    throw new Error(`${call.method} ${url.host}${url.pathname} answered HTTP ${res.status}: ${text.slice(0, 2_000)}`);
  }
  const type = res.headers.get("content-type") ?? "";
  if (!truncated && /\bjson\b/i.test(type) && text.trim() !== "") {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // Mislabelled JSON: hand back the text rather than failing the call.
    }
  }
  return truncated ? `${text}\n[response truncated at ${MAX_RESPONSE_BYTES} bytes]` : text;
}
