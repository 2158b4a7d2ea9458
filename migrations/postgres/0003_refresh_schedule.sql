-- Proactive refresh: when each connection is next due, and how many refreshes failed in a row.
ALTER TABLE connections ADD COLUMN next_refresh_at BIGINT;
ALTER TABLE connections ADD COLUMN refresh_failures BIGINT NOT NULL DEFAULT 0;
CREATE INDEX connections_next_refresh ON connections (next_refresh_at);
