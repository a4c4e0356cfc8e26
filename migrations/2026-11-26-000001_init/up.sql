-- Identity: users, orgs and who belongs where.
CREATE TABLE users (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE orgs (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    plan        TEXT NOT NULL DEFAULT 'free',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE sessions (
    id          UUID PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE,
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    ip          TEXT,
    user_agent  TEXT
);

-- Only the hash of a magic-link token is stored.
CREATE TABLE magic_links (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL,
    token_hash  BYTEA NOT NULL UNIQUE,
    redirect_to TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    ip          TEXT
);
CREATE INDEX magic_links_email_created ON magic_links (email, created_at);
CREATE INDEX magic_links_ip_created ON magic_links (ip, created_at);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- The first characters of the key, shown in lists so people can tell keys apart.
    prefix       TEXT NOT NULL,
    key_hash     BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_org ON api_keys (org_id);

-- Servers and their versions.
CREATE TABLE servers (
    id                 UUID PRIMARY KEY,
    org_id             UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    slug               TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    -- BUILDING, LIVE, FAILED, STOPPED, DELETED
    status             TEXT NOT NULL DEFAULT 'BUILDING',
    current_version_id UUID,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at         TIMESTAMPTZ
);
CREATE INDEX servers_org ON servers (org_id);

CREATE TABLE server_versions (
    id             UUID PRIMARY KEY,
    org_id         UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    server_id      UUID NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    version        INTEGER NOT NULL,
    -- NULL until the generate step has produced it (a build from an expired preview regenerates).
    spec           JSONB,
    spec_digest    TEXT,
    source_digest  TEXT,
    bundle_digest  TEXT,
    image_id       TEXT,
    generator      TEXT NOT NULL,
    instruction    TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (server_id, version)
);
ALTER TABLE servers ADD CONSTRAINT servers_current_version_fk
    FOREIGN KEY (current_version_id) REFERENCES server_versions(id) ON DELETE SET NULL;

CREATE TABLE builds (
    id            UUID PRIMARY KEY,
    org_id        UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    server_id     UUID NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    version_id    UUID NOT NULL REFERENCES server_versions(id) ON DELETE CASCADE,
    -- QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED
    status        TEXT NOT NULL DEFAULT 'QUEUED',
    current_step  TEXT,
    workflow_id   TEXT NOT NULL UNIQUE,
    run_id        TEXT,
    trace_id      TEXT,
    preview_id    UUID,
    generator     TEXT,
    usage         JSONB,
    error         TEXT,
    created_by    UUID REFERENCES users(id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ
);
CREATE INDEX builds_server ON builds (server_id, created_at DESC);
CREATE INDEX builds_org ON builds (org_id, created_at DESC);

-- The per-build event log the API streams; seq is dense per build.
CREATE TABLE build_events (
    id        BIGSERIAL PRIMARY KEY,
    org_id    UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    build_id  UUID NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    step      TEXT NOT NULL,
    -- STEP_STARTED, LOG, WARNING, STEP_SUCCEEDED, STEP_FAILED, STEP_RETRYING, BUILD_SUCCEEDED, BUILD_FAILED, BUILD_CANCELLED
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL,
    data      JSONB,
    at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (build_id, seq)
);

CREATE TABLE deployments (
    id              UUID PRIMARY KEY,
    org_id          UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    server_id       UUID NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    version_id      UUID NOT NULL REFERENCES server_versions(id) ON DELETE CASCADE,
    build_id        UUID NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    container_name  TEXT NOT NULL UNIQUE,
    container_id    TEXT,
    host            TEXT,
    port            INTEGER,
    -- STARTING, READY, LIVE, DRAINING, STOPPED, FAILED
    status          TEXT NOT NULL DEFAULT 'STARTING',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    live_at         TIMESTAMPTZ,
    stopped_at      TIMESTAMPTZ
);
CREATE INDEX deployments_server ON deployments (server_id, created_at DESC);

-- Specs generated by the wizard's preview step, kept for a few minutes.
CREATE TABLE previews (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     UUID REFERENCES users(id) ON DELETE SET NULL,
    server_id   UUID REFERENCES servers(id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    openapi     TEXT,
    instruction TEXT,
    spec        JSONB NOT NULL,
    generator   TEXT NOT NULL,
    usage       JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX previews_expires ON previews (expires_at);

-- Server credentials, sealed with the platform key (AES-256-GCM).
CREATE TABLE secrets (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    server_id   UUID NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (server_id, key)
);

-- Content-addressed sources and bundles, shared by every worker.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    data        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- OAuth 2.1 authorization server.
CREATE TABLE oauth_clients (
    id                          UUID PRIMARY KEY,
    client_id                   TEXT NOT NULL UNIQUE,
    client_secret_hash          BYTEA,
    client_name                 TEXT,
    redirect_uris               TEXT[] NOT NULL,
    grant_types                 TEXT[] NOT NULL,
    token_endpoint_auth_method  TEXT NOT NULL,
    scope                       TEXT,
    metadata                    JSONB NOT NULL DEFAULT '{}',
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE oauth_codes (
    code_hash       BYTEA PRIMARY KEY,
    client_id       TEXT NOT NULL,
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id          UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    resource        TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    used_at         TIMESTAMPTZ
);

CREATE TABLE oauth_refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    family_id   UUID NOT NULL,
    client_id   TEXT NOT NULL,
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    resource    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX oauth_refresh_family ON oauth_refresh_tokens (family_id);

-- RS256 signing keys; the private key is sealed with the platform key.
CREATE TABLE signing_keys (
    kid              TEXT PRIMARY KEY,
    private_nonce    BYTEA NOT NULL,
    private_sealed   BYTEA NOT NULL,
    public_jwk       JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Signs until retired_at; published until expires_at (after its last token expired).
    retired_at       TIMESTAMPTZ,
    expires_at       TIMESTAMPTZ
);

-- What each MCP client did while connecting to a server, for the connection trace.
CREATE TABLE oauth_connection_events (
    id           BIGSERIAL PRIMARY KEY,
    org_id       UUID REFERENCES orgs(id) ON DELETE CASCADE,
    server_id    UUID REFERENCES servers(id) ON DELETE CASCADE,
    client_id    TEXT,
    client_name  TEXT,
    -- discovery, registration, authorize, token, mcp
    step         TEXT NOT NULL,
    ok           BOOLEAN NOT NULL,
    detail       TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX oauth_connection_events_server ON oauth_connection_events (server_id, at DESC);

CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    org_id         UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id        UUID REFERENCES users(id) ON DELETE SET NULL,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    metadata       JSONB NOT NULL DEFAULT '{}',
    ip             TEXT,
    at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_org_at ON audit_log (org_id, id DESC);
