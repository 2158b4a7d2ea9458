-- The background loop's sweeps run every second and must read only what they act on, whatever
-- the number of connections: without these indexes, the sweep of abandoned authorizations read
-- every connection (SQLite scanned the table, PostgreSQL the whole workspace index), and the
-- flow sweep and the abandoned check read every OAuth flow.
CREATE INDEX connections_abandoned ON connections (created_at) WHERE status = 'pending' AND token_version = 0;
CREATE INDEX oauth_flows_by_connection ON oauth_flows (connection_id);
CREATE INDEX oauth_flows_by_expiry ON oauth_flows (expires_at);
