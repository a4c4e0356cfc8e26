-- The browser that asked for a sign-in link (hash of a cookie set on it), so
-- the confirmation page can say when the link is opened somewhere else.
ALTER TABLE magic_links ADD COLUMN browser_hash BYTEA;
