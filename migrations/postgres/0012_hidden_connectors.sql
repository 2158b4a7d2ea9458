-- Integrations an admin hid in a workspace (catalogue entries it does not want): not listed to
-- its members and not connectable there; existing connections keep working.
CREATE TABLE hidden_connectors (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    connector_id TEXT NOT NULL,
    hidden_by    TEXT NOT NULL,
    hidden_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, connector_id)
);
