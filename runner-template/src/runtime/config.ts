// Runtime configuration, read once from the environment at start. Every
// problem is reported together, so a misconfigured container says all of it.

export interface RuntimeConfig {
  port: number;
  /** Listen address: 0.0.0.0 in containers; tests bind loopback only. */
  host: string;
  /** The public MCP URL of this server: the token audience and the resource of RFC 9728. */
  serverUrl: URL;
  /** BMM_SERVER_URL exactly as configured: the required `aud` and the metadata's `resource`. */
  audience: string;
  /** The authorization server (platform origin); tokens' `iss` must equal it. */
  issuer: string;
  jwksFile?: string;
  jwksUrl?: URL;
  /** Origins allowed to call /mcp from a browser (besides same-origin with serverUrl). */
  allowedOrigins: ReadonlySet<string>;
  /** Scope every token needs (contract: `mcp`); empty disables the base check. */
  baseScope: string;
  /** `{origin}/.well-known/oauth-protected-resource{path}` for the WWW-Authenticate challenge. */
  resourceMetadataUrl: string;
  /** Paths /mcp is served on (its own `/mcp`, and the public path when a proxy keeps it). */
  mcpPaths: ReadonlySet<string>;
  metadataPaths: ReadonlySet<string>;
  toolTimeoutMs: number;
  shutdownGraceMs: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration: ${problems.join("; ")}`);
  }
}

const METADATA_PREFIX = "/.well-known/oauth-protected-resource";

/** Strip one trailing slash (but keep "/"), so `/mcp/` and `/mcp` are the same route. */
export function normalizePath(path: string): string {
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

function parseUrl(name: string, value: string | undefined, problems: string[]): URL | undefined {
  if (!value) {
    problems.push(`${name} is not set`);
    return undefined;
  }
  try {
    const url = new URL(value);
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      problems.push(`${name} must be an http(s) URL, got ${url.protocol}`);
      return undefined;
    }
    if (url.search || url.hash) {
      problems.push(`${name} must not have a query or fragment`);
      return undefined;
    }
    return url;
  } catch {
    problems.push(`${name} is not a URL: ${value}`);
    return undefined;
  }
}

function positiveInt(name: string, value: string | undefined, fallback: number, problems: string[]): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    problems.push(`${name} must be a positive integer, got ${value}`);
    return fallback;
  }
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const problems: string[] = [];
  const port = positiveInt("PORT", env.PORT, 8080, problems);
  if (port > 65535) problems.push(`PORT must be at most 65535, got ${port}`);
  const serverUrl = parseUrl("BMM_SERVER_URL", env.BMM_SERVER_URL, problems);
  const issuerUrl = parseUrl("BMM_ISSUER", env.BMM_ISSUER, problems);
  // The platform's `iss` has no trailing slash; compare against the exact configured string minus one.
  const issuer = (env.BMM_ISSUER ?? "").replace(/\/$/, "");

  const jwksFile = env.BMM_JWKS_FILE || undefined;
  let jwksUrl: URL | undefined;
  if (env.BMM_JWKS_URL) jwksUrl = parseUrl("BMM_JWKS_URL", env.BMM_JWKS_URL, problems);
  if (!jwksFile && !env.BMM_JWKS_URL) problems.push("one of BMM_JWKS_FILE or BMM_JWKS_URL must be set");
  if (jwksFile && env.BMM_JWKS_URL) problems.push("set only one of BMM_JWKS_FILE and BMM_JWKS_URL");

  const allowedOrigins = new Set<string>();
  for (const raw of (env.BMM_ALLOWED_ORIGINS ?? "").split(",")) {
    const item = raw.trim();
    if (!item) continue;
    try {
      const u = new URL(item);
      // An origin is scheme://host[:port]; anything else would never match a browser's Origin header.
      if (u.origin === "null" || u.pathname !== "/" || u.search || u.hash || item.replace(/\/$/, "") !== u.origin) {
        problems.push(`BMM_ALLOWED_ORIGINS entry is not an origin: ${item}`);
      } else {
        allowedOrigins.add(u.origin);
      }
    } catch {
      problems.push(`BMM_ALLOWED_ORIGINS entry is not an origin: ${item}`);
    }
  }

  const toolTimeoutMs = positiveInt("BMM_TOOL_TIMEOUT_MS", env.BMM_TOOL_TIMEOUT_MS, 60_000, problems);
  const shutdownGraceMs = positiveInt("BMM_SHUTDOWN_GRACE_MS", env.BMM_SHUTDOWN_GRACE_MS, 25_000, problems);

  if (problems.length > 0 || !serverUrl || !issuerUrl) throw new ConfigError(problems);

  const publicPath = normalizePath(serverUrl.pathname);
  const mcpPaths = new Set<string>(["/mcp", publicPath]);
  const metadataPaths = new Set<string>([
    METADATA_PREFIX,
    METADATA_PREFIX + "/mcp",
    publicPath === "/" ? METADATA_PREFIX : METADATA_PREFIX + publicPath,
  ]);
  const resourceMetadataUrl = serverUrl.origin + METADATA_PREFIX + (publicPath === "/" ? "" : publicPath);

  return {
    port,
    host: env.BMM_LISTEN_HOST || "0.0.0.0",
    serverUrl,
    audience: env.BMM_SERVER_URL as string,
    issuer,
    jwksFile,
    jwksUrl,
    allowedOrigins,
    baseScope: env.BMM_BASE_SCOPE ?? "mcp",
    resourceMetadataUrl,
    mcpPaths,
    metadataPaths,
    toolTimeoutMs,
    shutdownGraceMs,
  };
}
