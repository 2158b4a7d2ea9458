-- A connection can be switched off without deleting it: while `disabled_at` is set, the proxy and
-- credential reads refuse it (409); it keeps refreshing, so it works again when switched back on.
ALTER TABLE connections ADD COLUMN disabled_at BIGINT;
