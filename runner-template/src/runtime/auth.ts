// OAuth 2.1 resource server: verifies the caller's RS256 access token against
// the platform's JWKS and checks exp, nbf, iss and aud. Only RS256 is accepted,
// so `alg: none` and HS256-signed-with-the-public-key tokens are refused.
import { stat, readFile } from "node:fs/promises";
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify } from "jose";
import type { CryptoKey, FlattenedJWSInput, JSONWebKeySet, JWSHeaderParameters, JWTPayload } from "jose";
import type { RuntimeConfig } from "./config.js";
import { log } from "./log.js";

export type AuthOutcome =
  | { ok: true; subject: string | undefined; clientId: string | undefined; scopes: ReadonlySet<string> }
  | { ok: false; error: "missing_token" | "invalid_request" | "invalid_token"; description: string };

type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

const ALGORITHMS = ["RS256"];
/** Clock skew tolerated on exp/nbf between the platform and this container. */
const CLOCK_TOLERANCE_S = 30;
/** At most one re-read of the JWKS file per this interval when unknown kids arrive. */
const UNKNOWN_KID_RELOAD_MS = 2_000;
/** How often the file's identity (inode, size, mtime) is checked, to pick up rotation and removal. */
const STAT_INTERVAL_MS = 5_000;
// RFC 6750 b64token.
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/**
 * A JWKS file re-read by path: the platform replaces it by atomic rename in a
 * bind-mounted directory, so the open inode would go stale; we never hold it.
 */
class FileJwks {
  private keys: ReturnType<typeof createLocalJWKSet> | undefined;
  private identity = "";
  private lastLoad = 0;
  private lastStat = 0;
  private loading: Promise<void> | undefined;

  constructor(private readonly path: string) {}

  private async load(): Promise<void> {
    // Coalesce concurrent reloads into one read.
    this.loading ??= (async () => {
      this.lastLoad = Date.now();
      try {
        const st = await stat(this.path);
        const text = await readFile(this.path, "utf8");
        const parsed = JSON.parse(text) as JSONWebKeySet;
        if (!parsed || !Array.isArray(parsed.keys)) throw new Error("no `keys` array");
        // Only RSA signature keys can verify RS256; anything else in the file is ignored.
        const keys = parsed.keys.filter(
          (k) => k.kty === "RSA" && (k.use === undefined || k.use === "sig") && (k.alg === undefined || k.alg === "RS256"),
        );
        this.keys = createLocalJWKSet({ keys });
        this.identity = `${st.ino}:${st.size}:${st.mtimeMs}`;
        this.lastStat = Date.now();
        log("info", "jwks loaded", { source: "file", keys: keys.length });
      } catch (err) {
        log("error", "jwks file unreadable", { path: this.path, error: String(err) });
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  private async refreshIfChanged(): Promise<void> {
    if (!this.keys) {
      if (Date.now() - this.lastLoad >= UNKNOWN_KID_RELOAD_MS || this.lastLoad === 0) await this.load();
      return;
    }
    if (Date.now() - this.lastStat < STAT_INTERVAL_MS) return;
    this.lastStat = Date.now();
    try {
      const st = await stat(this.path);
      if (`${st.ino}:${st.size}:${st.mtimeMs}` !== this.identity) await this.load();
    } catch {
      // A missing file mid-rename: keep the keys we have until it reappears.
    }
  }

  readonly resolve: KeyResolver = async (header, token) => {
    await this.refreshIfChanged();
    if (!this.keys) throw new errors.JWKSNoMatchingKey();
    try {
      return await this.keys(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey && Date.now() - this.lastLoad >= UNKNOWN_KID_RELOAD_MS) {
        await this.load();
        if (this.keys) return this.keys(header, token);
      }
      throw err;
    }
  };
}

function describe(err: unknown, cfg: RuntimeConfig): string {
  if (err instanceof errors.JWTExpired) return "token expired";
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case "aud":
        return `token audience does not match this server (${cfg.audience})`;
      case "iss":
        return `token issuer does not match ${cfg.issuer}`;
      case "nbf":
        return "token is not yet valid";
      default:
        return `token claim ${err.claim} is ${err.reason}`;
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return "token algorithm is not RS256";
  if (err instanceof errors.JWKSNoMatchingKey) return "token signing key is unknown";
  if (err instanceof errors.JWSSignatureVerificationFailed) return "token signature is invalid";
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return "token is malformed";
  return "token is invalid";
}

export class TokenVerifier {
  private readonly resolver: KeyResolver;

  constructor(private readonly cfg: RuntimeConfig) {
    if (cfg.jwksFile) {
      this.resolver = new FileJwks(cfg.jwksFile).resolve;
    } else {
      // jose refetches on an unknown kid, at most once per cooldown.
      this.resolver = createRemoteJWKSet(cfg.jwksUrl as URL, { cooldownDuration: 10_000, cacheMaxAge: 600_000 });
    }
  }

  async verify(authorization: string | undefined): Promise<AuthOutcome> {
    if (authorization === undefined || authorization.trim() === "") {
      return { ok: false, error: "missing_token", description: "no access token" };
    }
    const m = BEARER.exec(authorization);
    if (!m) return { ok: false, error: "invalid_request", description: "Authorization must be `Bearer <token>`" };
    const token = m[1];
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return { ok: false, error: "invalid_token", description: "token is malformed" };
    }
    // Refuse before any key lookup: no alg confusion, no unsigned tokens.
    if (header.alg !== "RS256") return { ok: false, error: "invalid_token", description: "token algorithm is not RS256" };
    if (typeof header.kid !== "string" || header.kid === "") {
      return { ok: false, error: "invalid_token", description: "token has no key id (kid)" };
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.resolver, {
        algorithms: ALGORITHMS,
        issuer: this.cfg.issuer,
        audience: this.cfg.audience,
        clockTolerance: CLOCK_TOLERANCE_S,
        requiredClaims: ["exp", "iss", "aud"],
      }));
    } catch (err) {
      return { ok: false, error: "invalid_token", description: describe(err, this.cfg) };
    }
    const scope = typeof payload.scope === "string" ? payload.scope : "";
    const scopes = new Set(scope.split(" ").filter((s) => s !== ""));
    return {
      ok: true,
      subject: typeof payload.sub === "string" ? payload.sub : undefined,
      clientId: typeof payload.client_id === "string" ? payload.client_id : undefined,
      scopes,
    };
  }
}

/** RFC 6750 challenge with the RFC 9728 pointer to our metadata. */
export function bearerChallenge(
  cfg: RuntimeConfig,
  params: { error?: string; description?: string; scope?: string },
): string {
  const quote = (v: string) => `"${v.replace(/["\\\r\n]/g, "")}"`;
  const parts: string[] = [];
  if (params.error) parts.push(`error=${quote(params.error)}`);
  if (params.description) parts.push(`error_description=${quote(params.description)}`);
  if (params.scope) parts.push(`scope=${quote(params.scope)}`);
  parts.push(`resource_metadata=${quote(cfg.resourceMetadataUrl)}`);
  return `Bearer ${parts.join(", ")}`;
}
