-- Connectors uploaded through the admin API, content-addressed, so every replica sharing the
-- database loads them; and which version of each is active, the previous one (rollback), a
-- version waiting for an egress grant, and the hosts the admin granted.
CREATE TABLE connector_uploads (
    hash         TEXT PRIMARY KEY,
    connector_id TEXT NOT NULL,
    version      TEXT NOT NULL,
    component    BYTEA NOT NULL,
    egress_hosts TEXT NOT NULL,
    uploaded_at  BIGINT NOT NULL,
    uploaded_by  TEXT NOT NULL
);
CREATE INDEX connector_uploads_by_connector ON connector_uploads (connector_id, uploaded_at);

CREATE TABLE connector_deployments (
    connector_id  TEXT PRIMARY KEY,
    active_hash   TEXT,
    previous_hash TEXT,
    pending_hash  TEXT,
    granted_hosts TEXT NOT NULL DEFAULT '[]',
    updated_at    BIGINT NOT NULL
);
