ALTER TABLE magic_links DROP COLUMN browser_hash;
