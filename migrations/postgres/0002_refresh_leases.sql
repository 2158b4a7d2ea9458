-- Refresh leases: one refresh per connection at a time across processes. A process claims the
-- lease for the token version it read; it writes tokens back only while it still holds both.
ALTER TABLE connections ADD COLUMN lease_owner TEXT;
ALTER TABLE connections ADD COLUMN lease_until BIGINT;
