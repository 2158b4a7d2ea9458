-- Web UI sign-in sessions: the cookie's SHA-256 (the cookie itself is never stored), the CSRF
-- token pages send back on every change, and the workspace the session acts in.
CREATE TABLE ui_sessions (
    id_hash      TEXT PRIMARY KEY,
    csrf_token   TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);

-- An OAuth flow started from a signed-in UI session opens only in that session's browser
-- (no connection CSRF through a shared launch link).
ALTER TABLE oauth_flows ADD COLUMN session_hash TEXT;
