ALTER TABLE servers DROP COLUMN status_changed_at, DROP COLUMN status_reason;
DROP TABLE server_events;
