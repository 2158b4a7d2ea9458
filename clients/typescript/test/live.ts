// Calls a live keyport through the generated client (run by host/tests/openapi.rs with
// KEYPORT_URL and KEYPORT_TOKEN, the admin token). `tsc` type-checks every call against the
// document first; this then checks what the host answers.

import assert from "node:assert/strict";
import { createKeyportClient, type Schema } from "../src/index.js";

const baseUrl = process.env.KEYPORT_URL;
const token = process.env.KEYPORT_TOKEN;
if (!baseUrl || !token) throw new Error("set KEYPORT_URL and KEYPORT_TOKEN");

const admin = createKeyportClient({ baseUrl, token });

// Who am I.
const me = await admin.GET("/api/v1/me");
assert.equal(me.response.status, 200);
assert.equal(me.data?.kind, "admin_token");

// The connectors, typed.
const connectors = await admin.GET("/api/v1/connectors");
const slack = connectors.data?.connectors.find((c) => c.id === "slack");
assert.ok(slack, "slack is loaded");
assert.equal(slack.auth_kind, "oauth2");

// A provider app, then an OAuth connection waiting for the user's browser.
const app = await admin.PUT("/api/v1/provider-apps/{connector}", {
  params: { path: { connector: "slack" } },
  body: { client_id: "ts-client", client_secret: "ts-secret" },
});
assert.equal(app.data?.client_secret_set, true);
const started = await admin.POST("/api/v1/connections/oauth/start", {
  body: { connector: "slack", name: "From TypeScript" },
});
assert.equal(started.response.status, 201);
assert.ok(started.data, "an OAuth flow started");
assert.ok(started.data.authorize_url.startsWith(baseUrl + "/oauth/launch/"));
const id = started.data.connection_id;

const got = await admin.GET("/api/v1/connections/{id}", { params: { path: { id } } });
const connection: Schema<"Connection"> | undefined = got.data;
assert.equal(connection?.status, "pending");
assert.equal(connection?.name, "From TypeScript");

// Paged listing with a typed query.
const page = await admin.GET("/api/v1/connections", {
  params: { query: { connector: "slack", limit: 10, total: true } },
});
assert.equal(page.data?.total, 1);
assert.equal(page.data?.connections[0]?.id, id);

// A workspace API key, and the same calls through it.
const key = await admin.POST("/api/v1/api-keys", { body: { name: "typescript" } });
assert.equal(key.response.status, 201);
const platform = createKeyportClient({ baseUrl, token: key.data!.key });
const asKey = await platform.GET("/api/v1/me");
assert.equal(asKey.data?.kind, "api_key");

// Errors are typed too.
const missing = await platform.GET("/api/v1/connections/{id}", {
  params: { path: { id: "conn_does_not_exist" } },
});
assert.equal(missing.response.status, 404);
assert.equal(missing.error?.error.code, "not_found");
const refused = await platform.POST("/api/v1/workspaces", { body: { id: "nope" } });
assert.equal(refused.response.status, 403);
assert.equal(refused.error?.error.code, "forbidden");

// The connection goes away.
const deleted = await admin.DELETE("/api/v1/connections/{id}", { params: { path: { id } } });
assert.equal(deleted.response.status, 204);

console.log("typescript client: all calls answered as typed");
