// Entry point of every generated MCP server: Streamable HTTP (stateless) at
// /mcp behind OAuth 2.1 resource-server checks, RFC 9728 metadata, /healthz,
// JSON logs on stdout, graceful shutdown on SIGTERM. `spec.ts` and `tools.ts`
// are rendered from the tool spec; everything else is the fixed template.
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { TokenVerifier, bearerChallenge } from "./runtime/auth.js";
import { ConfigError, loadConfig, normalizePath } from "./runtime/config.js";
import type { RuntimeConfig } from "./runtime/config.js";
import { log } from "./runtime/log.js";
import { createMcpServer, listedTools } from "./runtime/mcp.js";
import { ToolRunner, loadCredentials, prepareTools } from "./runtime/tools.js";
import { SERVER } from "./spec.js";
import { TOOLS } from "./tools.js";

const MAX_BODY_BYTES = 4 * 1024 * 1024;
const CORS_ALLOW_HEADERS = "Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID";
const CORS_EXPOSE_HEADERS = "WWW-Authenticate, Mcp-Session-Id";

let cfg: RuntimeConfig;
try {
  cfg = loadConfig();
} catch (err) {
  log("error", "cannot start", { problems: err instanceof ConfigError ? err.problems : [String(err)] });
  process.exit(78); // EX_CONFIG
}

const tools = prepareTools(TOOLS);
const listed = listedTools(tools);
const runner = new ToolRunner(SERVER, loadCredentials(SERVER, process.env), cfg.toolTimeoutMs);
const verifier = new TokenVerifier(cfg);
const toolScopes = [...new Set(TOOLS.flatMap((t) => t.scopes))].sort();
const metadata = JSON.stringify({
  resource: cfg.audience,
  authorization_servers: [cfg.issuer],
  scopes_supported: [...new Set([...(cfg.baseScope ? [cfg.baseScope] : []), ...toolScopes, "offline_access"])],
  bearer_methods_supported: ["header"],
  resource_name: SERVER.name,
});

let inFlight = 0;
let shuttingDown = false;

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, {
    ...(text ? { "Content-Type": "application/json" } : {}),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    ...headers,
  });
  res.end(text);
}

/** DNS-rebinding guard: no Origin (non-browser), the server's own origin, or a configured one. */
function originAllowed(origin: string | undefined): boolean {
  if (origin === undefined) return true;
  return origin === cfg.serverUrl.origin || cfg.allowedOrigins.has(origin);
}

function corsHeaders(origin: string | undefined): Record<string, string> {
  if (origin === undefined) return {};
  return {
    "Access-Control-Allow-Origin": origin,
    "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
    Vary: "Origin",
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer | "too_large"> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return "too_large";
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Scopes a JSON-RPC batch needs: the base scope, plus those of every tool it calls. */
function requiredScopes(messages: unknown[]): string[] {
  const need = new Set<string>(cfg.baseScope ? [cfg.baseScope] : []);
  for (const m of messages) {
    if (typeof m !== "object" || m === null) continue;
    const { method, params } = m as { method?: unknown; params?: { name?: unknown } };
    if (method !== "tools/call" || typeof params?.name !== "string") continue;
    const tool = tools.get(params.name);
    tool?.def.scopes.forEach((s) => need.add(s));
  }
  return [...need];
}

async function handleMcp(req: IncomingMessage, res: ServerResponse, origin: string | undefined): Promise<void> {
  const cors = corsHeaders(origin);
  if (req.method === "OPTIONS") {
    send(res, 204, undefined, {
      ...cors,
      "Access-Control-Allow-Methods": "POST, OPTIONS",
      "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
      "Access-Control-Max-Age": "600",
    });
    return;
  }
  if (req.method !== "POST") {
    // Stateless: there is no session to stream to (GET) or to end (DELETE).
    send(res, 405, { jsonrpc: "2.0", error: { code: -32000, message: "Method not allowed." }, id: null }, {
      ...cors,
      Allow: "POST, OPTIONS",
    });
    return;
  }

  const auth = await verifier.verify(req.headers.authorization);
  if (!auth.ok) {
    const challenge =
      auth.error === "missing_token"
        ? bearerChallenge(cfg, {})
        : bearerChallenge(cfg, { error: auth.error, description: auth.description });
    log("info", "unauthorized", { reason: auth.description });
    send(
      res,
      401,
      { error: auth.error === "missing_token" ? "invalid_token" : auth.error, error_description: auth.description },
      { ...cors, "WWW-Authenticate": challenge },
    );
    return;
  }

  const raw = await readBody(req);
  if (raw === "too_large") {
    send(res, 413, { jsonrpc: "2.0", error: { code: -32000, message: "Request body too large" }, id: null }, cors);
    return;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString("utf8"));
  } catch {
    send(res, 400, { jsonrpc: "2.0", error: { code: -32700, message: "Parse error: Invalid JSON" }, id: null }, cors);
    return;
  }

  const need = requiredScopes(Array.isArray(parsed) ? parsed : [parsed]);
  const missing = need.filter((s) => !auth.scopes.has(s));
  if (missing.length > 0) {
    const scope = [...new Set([...need])].join(" ");
    log("info", "insufficient scope", { missing, subject: auth.subject });
    send(
      res,
      403,
      { error: "insufficient_scope", error_description: `token lacks scope ${missing.join(" ")}` },
      {
        ...cors,
        "WWW-Authenticate": bearerChallenge(cfg, {
          error: "insufficient_scope",
          description: `token lacks scope ${missing.join(" ")}`,
          scope,
        }),
      },
    );
    return;
  }

  for (const [k, v] of Object.entries(cors)) res.setHeader(k, v);
  const server = createMcpServer(SERVER, tools, listed, runner);
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on("close", () => {
    void transport.close();
    void server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, parsed);
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://localhost");
  const path = normalizePath(url.pathname);
  const origin = req.headers.origin;

  if (path === "/healthz") {
    send(res, shuttingDown ? 503 : 200, { status: shuttingDown ? "stopping" : "ok" });
    return;
  }
  if (cfg.metadataPaths.has(path)) {
    // Public, credential-free metadata: any origin may read it (browser clients discover auth here).
    const cors = { "Access-Control-Allow-Origin": "*" };
    if (req.method === "OPTIONS") {
      send(res, 204, undefined, {
        ...cors,
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": "600",
      });
    } else if (req.method === "GET" || req.method === "HEAD") {
      res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "max-age=300", ...cors });
      res.end(req.method === "HEAD" ? undefined : metadata);
    } else {
      send(res, 405, { error: "method not allowed" }, { ...cors, Allow: "GET, HEAD, OPTIONS" });
    }
    return;
  }
  if (cfg.mcpPaths.has(path)) {
    if (!originAllowed(origin)) {
      log("warn", "origin refused", { origin });
      send(res, 403, { jsonrpc: "2.0", error: { code: -32000, message: "Origin not allowed" }, id: null });
      return;
    }
    await handleMcp(req, res, origin);
    return;
  }
  send(res, 404, { error: "not found" });
}

const http = createServer((req, res) => {
  const started = Date.now();
  if (shuttingDown) {
    send(res, 503, { error: "shutting down" }, { Connection: "close" });
    return;
  }
  inFlight++;
  res.on("close", () => {
    inFlight--;
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (path !== "/healthz") {
      log("info", "request", { method: req.method, path, status: res.statusCode, ms: Date.now() - started });
    }
  });
  route(req, res).catch((err: unknown) => {
    log("error", "request failed", { error: err instanceof Error ? err.message : String(err) });
    if (!res.headersSent) send(res, 500, { jsonrpc: "2.0", error: { code: -32603, message: "Internal error" }, id: null });
    else res.end();
  });
});
// Long enough for the slowest tool call allowed, plus the request itself.
http.requestTimeout = cfg.toolTimeoutMs + 30_000;
http.headersTimeout = 30_000;
http.keepAliveTimeout = 5_000;

http.listen(cfg.port, cfg.host, () => {
  log("info", "listening", {
    port: cfg.port,
    host: cfg.host,
    server: SERVER.name,
    version: SERVER.version,
    tools: TOOLS.map((t) => t.name),
    resource: cfg.audience,
  });
});

function shutdown(signal: string): void {
  if (shuttingDown) return;
  shuttingDown = true;
  log("info", "shutting down", { signal, inFlight });
  // Stop accepting; idle keep-alive connections go now, busy ones after their response.
  http.close(() => {
    log("info", "stopped");
    process.exit(0);
  });
  http.closeIdleConnections();
  const deadline = setTimeout(() => {
    log("warn", "shutdown grace period over", { inFlight });
    http.closeAllConnections();
    process.exit(0);
  }, cfg.shutdownGraceMs);
  deadline.unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
