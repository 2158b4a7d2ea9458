-- People: installation-wide users, their role in each workspace, invitations, and who owns each
-- connection. Existing connections get no owner and stay shared with the workspace at `manage`,
-- so everything that worked before the upgrade keeps working.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    -- Lower-cased; unique among users that have one (external users may have none).
    email               TEXT UNIQUE,
    display_name        TEXT NOT NULL DEFAULT '',
    -- Argon2id PHC string; NULL: cannot sign in with a password.
    password_hash       TEXT,
    -- Users a platform's API key acts for (`X-Keyport-User`): their id in that platform, scoped
    -- to the workspace of the key. They cannot sign in.
    external_workspace  TEXT,
    external_id         TEXT,
    -- The OpenID Connect `sub` of an SSO user (with the issuer it came from).
    sso_issuer          TEXT,
    sso_subject         TEXT,
    installation_admin  BIGINT NOT NULL DEFAULT 0,
    disabled_at         BIGINT,
    created_at          BIGINT NOT NULL,
    last_sign_in_at     BIGINT,
    UNIQUE (external_workspace, external_id),
    UNIQUE (sso_issuer, sso_subject)
);

CREATE TABLE memberships (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL,
    invited_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    accepted_at  BIGINT,
    accepted_by  TEXT
);

-- Who authorized a connection (NULL: the workspace itself, e.g. its automation or the admin
-- token) and who may use it: `personal` (the owner alone) or `shared` at `use` or `manage`.
ALTER TABLE connections ADD COLUMN owner_user_id TEXT;
ALTER TABLE connections ADD COLUMN visibility TEXT NOT NULL DEFAULT 'shared';
ALTER TABLE connections ADD COLUMN share_permission TEXT NOT NULL DEFAULT 'manage';
CREATE INDEX connections_by_owner ON connections (workspace_id, owner_user_id);

-- A UI session signed in as a user (NULL: signed in with the admin token).
ALTER TABLE ui_sessions ADD COLUMN user_id TEXT;

ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;

-- A provider app may insist that the connected account is the connecting person's own: its
-- email must equal the user's.
ALTER TABLE provider_apps ADD COLUMN require_account_email_match BIGINT NOT NULL DEFAULT 0;

-- Single sign-on flows in progress: the state's hash, the browser they belong to (a cookie's
-- hash), the sealed nonce and PKCE verifier, where to go after, and single use.
CREATE TABLE sso_flows (
    state_hash   TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    sealed       TEXT NOT NULL,
    next_path    TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    consumed_at  BIGINT
);
