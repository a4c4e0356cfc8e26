// The diesel schema of `migrations/`; kept by hand in step with the SQL (a test
// checks every table and column against the migrated database).

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    orgs (id) {
        id -> Uuid,
        name -> Text,
        slug -> Text,
        plan -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    memberships (org_id, user_id) {
        org_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        token_hash -> Bytea,
        user_id -> Uuid,
        org_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    magic_links (id) {
        id -> Uuid,
        email -> Text,
        token_hash -> Bytea,
        redirect_to -> Nullable<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        ip -> Nullable<Text>,
        browser_hash -> Nullable<Bytea>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        org_id -> Uuid,
        user_id -> Uuid,
        name -> Text,
        prefix -> Text,
        key_hash -> Bytea,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    servers (id) {
        id -> Uuid,
        org_id -> Uuid,
        slug -> Text,
        name -> Text,
        description -> Text,
        status -> Text,
        current_version_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        status_reason -> Nullable<Text>,
        status_changed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    server_events (id) {
        id -> Int8,
        org_id -> Uuid,
        server_id -> Uuid,
        kind -> Text,
        message -> Text,
        data -> Nullable<Jsonb>,
        at -> Timestamptz,
    }
}

diesel::table! {
    server_versions (id) {
        id -> Uuid,
        org_id -> Uuid,
        server_id -> Uuid,
        version -> Int4,
        spec -> Nullable<Jsonb>,
        spec_digest -> Nullable<Text>,
        source_digest -> Nullable<Text>,
        bundle_digest -> Nullable<Text>,
        image_id -> Nullable<Text>,
        generator -> Text,
        instruction -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    builds (id) {
        id -> Uuid,
        org_id -> Uuid,
        server_id -> Uuid,
        version_id -> Uuid,
        status -> Text,
        current_step -> Nullable<Text>,
        workflow_id -> Text,
        run_id -> Nullable<Text>,
        trace_id -> Nullable<Text>,
        preview_id -> Nullable<Uuid>,
        generator -> Nullable<Text>,
        usage -> Nullable<Jsonb>,
        error -> Nullable<Text>,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    build_events (id) {
        id -> Int8,
        org_id -> Uuid,
        build_id -> Uuid,
        seq -> Int4,
        step -> Text,
        kind -> Text,
        message -> Text,
        data -> Nullable<Jsonb>,
        at -> Timestamptz,
    }
}

diesel::table! {
    deployments (id) {
        id -> Uuid,
        org_id -> Uuid,
        server_id -> Uuid,
        version_id -> Uuid,
        build_id -> Uuid,
        container_name -> Text,
        container_id -> Nullable<Text>,
        host -> Nullable<Text>,
        port -> Nullable<Int4>,
        status -> Text,
        created_at -> Timestamptz,
        live_at -> Nullable<Timestamptz>,
        stopped_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    previews (id) {
        id -> Uuid,
        org_id -> Uuid,
        user_id -> Nullable<Uuid>,
        server_id -> Nullable<Uuid>,
        description -> Text,
        openapi -> Nullable<Text>,
        instruction -> Nullable<Text>,
        spec -> Jsonb,
        generator -> Text,
        usage -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    secrets (id) {
        id -> Uuid,
        org_id -> Uuid,
        server_id -> Uuid,
        key -> Text,
        nonce -> Bytea,
        ciphertext -> Bytea,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        /// Generated from `nonce`: the master key that wrapped the value (NULL = legacy format).
        master_key_id -> Nullable<Text>,
    }
}

diesel::table! {
    blobs (digest) {
        digest -> Text,
        media_type -> Text,
        data -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_clients (id) {
        id -> Uuid,
        client_id -> Text,
        client_secret_hash -> Nullable<Bytea>,
        client_name -> Nullable<Text>,
        redirect_uris -> Array<Text>,
        grant_types -> Array<Text>,
        token_endpoint_auth_method -> Text,
        scope -> Nullable<Text>,
        metadata -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_codes (code_hash) {
        code_hash -> Bytea,
        client_id -> Text,
        user_id -> Uuid,
        org_id -> Uuid,
        redirect_uri -> Text,
        code_challenge -> Text,
        resource -> Text,
        scope -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oauth_refresh_tokens (token_hash) {
        token_hash -> Bytea,
        family_id -> Uuid,
        client_id -> Text,
        user_id -> Uuid,
        org_id -> Uuid,
        resource -> Text,
        scope -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        private_nonce -> Bytea,
        private_sealed -> Bytea,
        public_jwk -> Jsonb,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
        expires_at -> Nullable<Timestamptz>,
        /// Generated from `private_nonce`: the master key that wrapped it (NULL = legacy format).
        master_key_id -> Nullable<Text>,
    }
}

diesel::table! {
    retired_master_keys (key_id) {
        key_id -> Text,
        retired_at -> Timestamptz,
        successor -> Text,
        rotation -> Text,
    }
}

diesel::table! {
    oauth_connection_events (id) {
        id -> Int8,
        org_id -> Nullable<Uuid>,
        server_id -> Nullable<Uuid>,
        client_id -> Nullable<Text>,
        client_name -> Nullable<Text>,
        step -> Text,
        ok -> Bool,
        detail -> Text,
        at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        org_id -> Uuid,
        user_id -> Nullable<Uuid>,
        action -> Text,
        resource_type -> Text,
        resource_id -> Nullable<Text>,
        metadata -> Jsonb,
        ip -> Nullable<Text>,
        at -> Timestamptz,
    }
}

diesel::joinable!(memberships -> orgs (org_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(api_keys -> orgs (org_id));
diesel::joinable!(server_versions -> servers (server_id));
diesel::joinable!(builds -> servers (server_id));
diesel::joinable!(builds -> server_versions (version_id));
diesel::joinable!(build_events -> builds (build_id));
diesel::joinable!(deployments -> servers (server_id));
diesel::joinable!(secrets -> servers (server_id));
diesel::joinable!(server_events -> servers (server_id));

diesel::allow_tables_to_appear_in_same_query!(
    server_events,
    users,
    orgs,
    memberships,
    sessions,
    magic_links,
    api_keys,
    servers,
    server_versions,
    builds,
    build_events,
    deployments,
    previews,
    secrets,
    blobs,
    oauth_clients,
    oauth_codes,
    oauth_refresh_tokens,
    signing_keys,
    retired_master_keys,
    oauth_connection_events,
    audit_log,
);
