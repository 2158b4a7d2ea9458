-- Webhook subscriptions and their outbox: one row per event per subscription, written in the same
-- transaction as the status change it reports, so deliveries survive restarts and each
-- transition is delivered once. The outbox rows are the delivery log.
CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    -- ",connection.revoked,connection.error," or ",*,"
    events       TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);
CREATE INDEX webhooks_by_workspace ON webhooks (workspace_id);

CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    workspace_id    TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at);
CREATE INDEX webhook_outbox_by_webhook ON webhook_outbox (webhook_id, created_at);

CREATE INDEX audit_by_workspace ON audit_events (workspace_id, id);
CREATE INDEX audit_by_time ON audit_events (created_at);
