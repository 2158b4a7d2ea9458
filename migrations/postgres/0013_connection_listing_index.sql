-- Listings walk a workspace's connections newest first (`ORDER BY created_at DESC, id`) and stop
-- after one page: without this index every page sorted all of the workspace's rows.
CREATE INDEX connections_listing ON connections (workspace_id, created_at DESC, id);
