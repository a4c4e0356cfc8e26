DROP TABLE IF EXISTS retired_master_keys;
ALTER TABLE signing_keys DROP COLUMN IF EXISTS master_key_id;
DROP INDEX IF EXISTS secrets_master_key_id;
ALTER TABLE secrets DROP COLUMN IF EXISTS master_key_id;
