//! The shapes of the API's answers, for the OpenAPI document ([`super::openapi`]). The objects
//! most callers read ([`crate::connections::ConnectionView`], [`crate::connections::RequestView`],
//! [`crate::auth::people::UserView`]) are the very types the handlers serialize; the others describe
//! JSON the lifecycle builds. Schemathesis checks every answer against them in CI
//! (`host/tests/openapi.rs`), so a view that changes without its schema fails the suite.
//!
//! Objects here allow properties they do not list (a new field is not a breaking change for a
//! client); the properties they list are the contract.

#![allow(dead_code)]

use serde_json::Value;
use utoipa::ToSchema;

pub use crate::auth::people::UserView;
pub use crate::connections::{ConnectionView, RequestView};

/// Every error: a stable `code`, a `message` that says what to do, and for invalid fields where
/// they are (JSON pointers into the request body).
#[derive(ToSchema)]
pub struct Error {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `invalid`,
    /// `rate_limited`, `payload_too_large`, `provider_error`, `unavailable`, …
    pub code: String,
    pub message: String,
    pub fields: Option<Vec<FieldError>>,
}

#[derive(ToSchema)]
pub struct FieldError {
    /// A JSON pointer into the request body (`/config/channel`).
    pub path: String,
    pub message: String,
}

/// `GET /api/v1/connections`: one page.
#[derive(serde::Serialize, ToSchema)]
pub struct ConnectionPage<'a> {
    pub connections: Vec<ConnectionView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Every match, with `total=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// A connection after revocation, with how the provider answered.
#[derive(serde::Serialize, ToSchema)]
pub struct RevokedConnection<'a> {
    #[serde(flatten)]
    pub connection: ConnectionView<'a>,
    pub provider_revocation: ProviderRevocation,
}

/// Whether the provider confirmed the revocation; keyport deletes the credentials either way.
#[derive(serde::Serialize, ToSchema)]
pub struct ProviderRevocation {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An OAuth flow that waits for the user's browser.
#[derive(ToSchema)]
pub struct OAuthStarted {
    /// The new (or reconnected) connection, `pending` until the callback.
    pub connection_id: String,
    /// Open this in the user's browser: it binds the flow to that browser and redirects to the
    /// provider's consent screen.
    pub authorize_url: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

#[derive(ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

#[derive(ToSchema)]
pub struct Workspaces {
    pub workspaces: Vec<Workspace>,
}

/// `PATCH /api/v1/workspaces/{ws}`: how the workspace presents itself.
#[derive(ToSchema)]
pub struct Branding {
    pub id: String,
    pub name: String,
    /// A `data:` URL, or `null`.
    pub logo: Option<String>,
    pub members_may_request: bool,
}

#[derive(ToSchema)]
pub struct ApiKeyCreated {
    pub id: String,
    pub workspace: String,
    pub name: String,
    /// The key itself, shown only here.
    pub key: String,
    pub note: String,
}

#[derive(ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub permissions: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

#[derive(ToSchema)]
pub struct ApiKeys {
    pub api_keys: Vec<ApiKey>,
}

/// A workspace's OAuth app for one connector (never its secret).
#[derive(ToSchema)]
pub struct ProviderApp {
    pub connector: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scopes: Option<Vec<String>>,
    /// URL prefix rewrites.
    #[schema(value_type = Option<Object>)]
    pub endpoint_overrides: Value,
    pub require_account_email_match: bool,
    /// The callback to register with the provider, byte-identical in every flow.
    pub redirect_uri: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A connection's config with the given overrides applied (what a caller would act on).
#[derive(ToSchema)]
pub struct EffectiveConfig {
    #[schema(value_type = Object)]
    pub config: Value,
}

#[derive(ToSchema)]
pub struct Dependent {
    /// Whatever the platform uses to name what depends on the connection.
    #[schema(rename = "ref")]
    pub r#ref: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(ToSchema)]
pub struct Dependents {
    pub dependents: Vec<Dependent>,
}

/// One audit event. `detail` never holds a secret.
#[derive(ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub connection_id: Option<String>,
    pub action: String,
    pub actor: String,
    #[schema(value_type = Object)]
    pub detail: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A connection's current credentials (API keys with `credentials:read`, and the admin token).
#[derive(ToSchema)]
pub struct Credentials {
    /// `oauth2` or `api_key`.
    #[schema(rename = "type")]
    pub r#type: String,
    pub access_token: Option<String>,
    /// `Bearer`.
    pub token_type: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub api_key: Option<String>,
}

#[derive(ToSchema)]
pub struct Me {
    /// `admin_token`, `user`, `api_key` or `api_key_as_user`.
    pub kind: String,
    pub workspace: String,
    /// `owner`, `admin`, `member`, `viewer` or `client`; `null` for the admin token.
    pub role: Option<String>,
    pub installation_admin: bool,
    pub user: Option<UserView<'static>>,
    /// How the audit log names the caller.
    pub actor: String,
}

/// A new session: the cookie is set, and calls need `csrf_token` as `X-CSRF-Token`.
#[derive(ToSchema)]
pub struct SignedIn {
    pub user: Option<UserView<'static>>,
    pub workspace: String,
    pub csrf_token: String,
}

#[derive(ToSchema)]
pub struct EndedSessions {
    pub ended_sessions: i64,
}

#[derive(ToSchema)]
pub struct Users {
    pub users: Vec<UserView<'static>>,
}

#[derive(ToSchema)]
pub struct Member {
    pub user_id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub external_id: Option<String>,
    pub role: String,
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub since: String,
}

#[derive(ToSchema)]
pub struct Members {
    pub members: Vec<Member>,
}

/// Whether the link was emailed: `true`, `false` (no SMTP server), or what the mail server said.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum Emailed {
    Sent(bool),
    Refused { error: String },
}

#[derive(ToSchema)]
pub struct InvitationCreated {
    pub id: String,
    pub email: String,
    pub role: String,
    pub workspace: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Shown only here; it works once.
    pub link: String,
    pub emailed: Emailed,
    pub note: String,
}

#[derive(ToSchema)]
pub struct Invitation {
    pub id: String,
    pub email: String,
    pub role: String,
    pub invited_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

#[derive(ToSchema)]
pub struct Invitations {
    pub invitations: Vec<Invitation>,
}

/// What an invitation link offers.
#[derive(ToSchema)]
pub struct InvitationOffer {
    pub workspace: String,
    pub email: String,
    pub role: String,
    /// Whether the email already has an account (sign in rather than choose a password).
    pub account_exists: bool,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

#[derive(ToSchema)]
pub struct Note {
    pub note: String,
}

#[derive(ToSchema)]
pub struct RequestsCreated {
    pub connection_requests: Vec<RequestView<'static>>,
    /// Shown only here; it works once.
    pub link: String,
    pub emailed: Emailed,
    pub note: String,
}

#[derive(ToSchema)]
pub struct RequestResent {
    pub connection_request: RequestView<'static>,
    pub link: String,
    pub emailed: Emailed,
}

#[derive(ToSchema)]
pub struct Requests {
    pub connection_requests: Vec<RequestView<'static>>,
}

/// The client portal: the signed-in client's open requests and connections.
#[derive(ToSchema)]
pub struct Portal {
    pub workspace: String,
    #[schema(value_type = Vec<Object>)]
    pub requests: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub connections: Vec<Value>,
}

/// A connector's manifest: what it is, how it authenticates, its scopes, endpoints and config
/// schema.
#[derive(ToSchema)]
pub struct Connector {
    pub id: String,
    pub display_name: String,
    pub version: String,
    pub description: String,
    /// `oauth2` or `api-key`.
    pub auth_kind: String,
    /// The OAuth 2 endpoints or the API-key form.
    #[schema(value_type = Object)]
    pub auth: Value,
    #[schema(value_type = Vec<Object>)]
    pub scopes: Vec<Value>,
    pub api_base_url: String,
    pub egress_hosts: Vec<String>,
    /// The per-connection settings, as a JSON Schema.
    #[schema(value_type = Object)]
    pub config_schema: Value,
    /// The WIT contract version the component was built against.
    pub contract: String,
    /// SHA-256 of the component.
    pub hash: String,
    /// `builtin`, `uploaded`, `custom` or `catalogue`.
    pub source: Option<String>,
    /// Hidden in this workspace (listed only to those who may show it again).
    pub hidden: Option<bool>,
}

#[derive(ToSchema)]
pub struct Connectors {
    pub connectors: Vec<Connector>,
}

/// A custom OAuth provider: its definition and the manifest keyport serves from it.
#[derive(ToSchema)]
pub struct Provider {
    pub id: String,
    pub issuer: Option<String>,
    #[schema(value_type = Object)]
    pub definition: Value,
    #[schema(value_type = Object)]
    pub manifest: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct Providers {
    pub providers: Vec<Provider>,
}

/// Every custom provider's definition (no client credentials), to import elsewhere
/// (`POST /api/v1/admin/providers/import`).
#[derive(ToSchema)]
pub struct ProviderFile {
    /// `keyport-providers/1`.
    pub format: String,
    #[schema(format = DateTime)]
    pub exported_at: String,
    #[schema(value_type = Vec<Object>)]
    pub providers: Vec<Value>,
}

/// What an import did with each definition in the file.
#[derive(ToSchema)]
pub struct ImportReport {
    pub imported: Vec<String>,
    pub created: i64,
    pub updated: i64,
    pub rejected: i64,
    /// One entry per definition: `index`, `id`, `outcome` (`created`, `updated`, `rejected`)
    /// and for rejections the `field` and `reason`.
    #[schema(value_type = Vec<Object>)]
    pub report: Vec<Value>,
    pub note: String,
}

/// An uploaded component: active, or waiting for an admin to grant its egress hosts.
#[derive(ToSchema)]
pub struct Uploaded {
    pub id: String,
    pub version: String,
    pub hash: String,
    /// `active` or `pending_approval`.
    pub status: String,
    pub egress_hosts: Vec<String>,
    pub oauth_hosts: Vec<String>,
    pub missing_grants: Vec<String>,
    pub message: String,
}

/// Hosts granted to an uploaded connector.
#[derive(ToSchema)]
pub struct Approved {
    pub id: String,
    pub granted_hosts: Vec<String>,
    /// The hash of the waiting version this grant made active, if it did.
    pub activated: Option<String>,
    /// The hash of a version still waiting for hosts, if any.
    pub pending: Option<String>,
}

/// The version active again after a rollback.
#[derive(ToSchema)]
pub struct RolledBack {
    pub id: String,
    pub hash: String,
    pub version: String,
    pub status: String,
}

/// Every loaded connector, uploads waiting for approval, and files the connectors directory
/// could not load.
#[derive(ToSchema)]
pub struct LoadedConnectors {
    #[schema(value_type = Vec<Object>)]
    pub connectors: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub pending_approval: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub directory_errors: Vec<Value>,
}

/// The installation's single sign-on (never the client secret).
#[derive(ToSchema)]
pub struct Sso {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub allow_signup: bool,
    pub signup_workspace: Option<String>,
    pub signup_role: Option<String>,
    pub token_auth: String,
    /// The callback to register with the identity provider.
    pub redirect_uri: String,
}

/// The provider catalogue as this workspace sees it.
#[derive(ToSchema)]
pub struct Catalogue {
    /// The callback to register in each provider's developer console.
    pub redirect_uri: String,
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<Value>,
}

/// One catalogue entry after hiding or showing it.
#[derive(ToSchema)]
pub struct CatalogueEntry {
    pub id: String,
    pub hidden: bool,
}

#[derive(ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Verify `X-Keyport-Signature` with it; only in the answer that created the webhook.
    pub secret: Option<String>,
}

#[derive(ToSchema)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

#[derive(ToSchema)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
}

#[derive(ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

/// Settings to override for this read (types kept), e.g. `{"channel": "C024BE91L"}`.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct ConfigOverrides(Value);

/// A custom OAuth provider definition (see the README's "Custom OAuth providers"), or
/// `{"id", "issuer"}` to discover one from an OpenID Connect issuer.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct ProviderDefinition(Value);

/// An export file (`GET /api/v1/admin/providers/export`).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct ProviderFileInput(Value);

/// A WebAssembly component built for `wasm32-wasip2` against keyport's WIT contract.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Wasm(Vec<u8>);
