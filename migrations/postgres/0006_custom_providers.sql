-- Custom OAuth providers imported at runtime (definitions for the custom-oauth connector). Client
-- credentials are not here: they live in each workspace's provider app, encrypted.
CREATE TABLE custom_providers (
    id         TEXT PRIMARY KEY,
    issuer     TEXT UNIQUE,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
