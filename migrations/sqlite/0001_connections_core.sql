-- keyport schema v1 (SQLite). Times are Unix milliseconds; JSON is stored as TEXT; secrets live
-- only in `secrets`, sealed by the vault.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    permissions  TEXT NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

CREATE TABLE provider_apps (
    workspace_id       TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    connector_id       TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    scopes             TEXT NOT NULL DEFAULT '[]',
    endpoint_overrides TEXT NOT NULL DEFAULT '{}',
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, connector_id)
);

CREATE TABLE connections (
    id                       TEXT PRIMARY KEY,
    workspace_id             TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    connector_id             TEXT NOT NULL,
    name                     TEXT NOT NULL,
    auth_kind                TEXT NOT NULL,
    status                   TEXT NOT NULL,
    status_reason            TEXT,
    config                   TEXT NOT NULL DEFAULT '{}',
    metadata                 TEXT NOT NULL DEFAULT '{}',
    account_id               TEXT,
    account_name             TEXT,
    account_email            TEXT,
    requested_scopes         TEXT NOT NULL DEFAULT '[]',
    granted_scopes           TEXT,
    scope_narrowed           BIGINT NOT NULL DEFAULT 0,
    expires_at               BIGINT,
    refresh_token_expires_at BIGINT,
    last_refreshed_at        BIGINT,
    last_used_at             BIGINT,
    lookup_attempts          BIGINT NOT NULL DEFAULT 0,
    next_lookup_at           BIGINT,
    token_version            BIGINT NOT NULL DEFAULT 0,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX connections_by_workspace ON connections (workspace_id, connector_id, status);
CREATE INDEX connections_pending_lookup ON connections (next_lookup_at);

CREATE TABLE secrets (
    owner_id     TEXT NOT NULL,
    field        TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    ciphertext   BLOB NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (owner_id, field)
);
CREATE INDEX secrets_by_key ON secrets (key_id);

CREATE TABLE oauth_flows (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    connection_id    TEXT NOT NULL,
    connector_id     TEXT NOT NULL,
    state_hash       TEXT NOT NULL UNIQUE,
    launch_hash      TEXT NOT NULL UNIQUE,
    browser_hash     TEXT,
    redirect_uri     TEXT NOT NULL,
    requested_scopes TEXT NOT NULL DEFAULT '[]',
    return_to        TEXT,
    reconnect        BIGINT NOT NULL DEFAULT 0,
    expires_at       BIGINT NOT NULL,
    launched_at      BIGINT,
    consumed_at      BIGINT,
    created_at       BIGINT NOT NULL
);

CREATE TABLE dependents (
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    ref           TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, ref)
);

CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  TEXT NOT NULL,
    connection_id TEXT,
    action        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL
);
CREATE INDEX audit_by_connection ON audit_events (workspace_id, connection_id, id);
