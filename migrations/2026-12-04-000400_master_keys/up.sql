-- Which master key wrapped each sealed value, read from the envelope header
-- itself (bmm_core::envelope: version 1, then the 4-byte key id), so it can
-- never disagree with the value. NULL = the legacy format without a key id.
-- The rotation counts and picks what is not yet under the current key.
ALTER TABLE secrets ADD COLUMN master_key_id TEXT GENERATED ALWAYS AS (
    CASE WHEN length(nonce) = 77 AND get_byte(nonce, 0) = 1
         THEN encode(substring(nonce FROM 2 FOR 4), 'hex') END
) STORED;
CREATE INDEX secrets_master_key_id ON secrets (master_key_id);

ALTER TABLE signing_keys ADD COLUMN master_key_id TEXT GENERATED ALWAYS AS (
    CASE WHEN length(private_nonce) = 77 AND get_byte(private_nonce, 0) = 1
         THEN encode(substring(private_nonce FROM 2 FOR 4), 'hex') END
) STORED;

-- Master keys a finished rotation moved every value away from: refused from
-- then on, even by a process that still has them configured.
CREATE TABLE retired_master_keys (
    key_id      TEXT PRIMARY KEY,
    retired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The key the rotation moved values to, and its workflow.
    successor   TEXT NOT NULL,
    rotation    TEXT NOT NULL
);
