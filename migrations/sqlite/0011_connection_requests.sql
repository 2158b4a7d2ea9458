-- Connection requests: a workspace asks a client (by email) to connect an app, or to reconnect
-- one of their connections. One link (its token stored as a hash) covers the apps asked for at
-- once: one row each. `connection_id` is the connection to reconnect, or the one the request
-- produced once fulfilled.
CREATE TABLE connection_requests (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL,
    client_email  TEXT NOT NULL,
    connector_id  TEXT NOT NULL,
    connection_id TEXT,
    reconnect     BIGINT NOT NULL DEFAULT 0,
    label         TEXT,
    message       TEXT,
    scopes        TEXT NOT NULL DEFAULT '[]',
    config        TEXT NOT NULL DEFAULT '{}',
    requested_by  TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    fulfilled_at  BIGINT,
    cancelled_at  BIGINT
);
CREATE INDEX connection_requests_by_token ON connection_requests (token_hash);
CREATE INDEX connection_requests_by_workspace ON connection_requests (workspace_id, status, created_at);
CREATE INDEX connection_requests_expiry ON connection_requests (status, expires_at);

-- When the client opened the link (it signs them in once).
ALTER TABLE connection_requests ADD COLUMN joined_at BIGINT;
-- An OAuth flow started from a request fulfils it.
ALTER TABLE oauth_flows ADD COLUMN request_id TEXT;

-- Sign-in links sent by email (clients and anyone without a password): single use, short-lived.
CREATE TABLE sign_in_links (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

-- A workspace's logo for its client portal (a data: URL of a small image).
ALTER TABLE workspaces ADD COLUMN logo TEXT;

-- Whether members (not only owners and admins) may send connection requests.
ALTER TABLE workspaces ADD COLUMN members_may_request BIGINT NOT NULL DEFAULT 0;
