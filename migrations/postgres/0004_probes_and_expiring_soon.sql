-- Slow-schedule probes of credentials that never expire (API keys, non-expiring tokens), and the
-- one-time "expiring soon" flag (refresh token about to expire, or refreshes that keep failing).
ALTER TABLE connections ADD COLUMN next_probe_at BIGINT;
ALTER TABLE connections ADD COLUMN expiring_soon_at BIGINT;
ALTER TABLE connections ADD COLUMN expiring_soon_reason TEXT;
CREATE INDEX connections_next_probe ON connections (next_probe_at);
CREATE INDEX connections_refresh_token_expiry ON connections (refresh_token_expires_at);
