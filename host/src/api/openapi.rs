//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers: every route is registered
//! through [`utoipa_axum`] from its `#[utoipa::path]`, so a route cannot exist without its
//! description, and request types are the handlers' own. [`finish`] adds what every operation
//! shares: the security schemes, the `X-Keyport-Workspace` and `X-Keyport-User` headers, and the
//! error answers each kind of operation can give. Served at `GET /api/v1/openapi.json` and
//! rendered by the page at `/api/reference`.

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder,
    Type,
};

use super::schema;

/// The document's fixed parts; the paths come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "keyport",
        description = "keyport owns a platform's connections to third-party accounts: OAuth flows, encrypted credentials, refresh, health and authenticated calls through a proxy.\n\nAuthenticate with the admin token or a workspace API key as a bearer token. The admin token acts in the workspace named by `X-Keyport-Workspace` (default `default`). The web UI's session cookie also works, with the page's `X-CSRF-Token` and a same-origin `Origin`.\n\nEvery error is `{\"error\": {\"code\", \"message\"}}`; the message says what to do.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "connections", description = "Connections to third-party accounts: OAuth and API-key, their health, refresh and revocation"),
        (name = "connectors", description = "The providers keyport can connect to"),
        (name = "provider-apps", description = "A workspace's OAuth apps (client id and secret) per connector"),
        (name = "connection-requests", description = "Asking a client to connect their accounts"),
        (name = "portal", description = "What a client sees"),
        (name = "audit", description = "Who did what, when"),
        (name = "webhooks", description = "Events pushed to the platform"),
        (name = "auth", description = "Sessions and the caller"),
        (name = "users", description = "People of the installation"),
        (name = "members", description = "People of a workspace and their roles"),
        (name = "invitations", description = "Inviting people into a workspace"),
        (name = "workspaces", description = "Workspaces"),
        (name = "api-keys", description = "Workspace API keys"),
        (name = "admin", description = "Installation administration: custom providers, uploaded connectors, single sign-on, the catalogue"),
    ),
    paths(super::usage::proxy),
    components(schemas(schema::Error))
)]
pub struct ApiDoc;

/// Security scheme names.
const ADMIN_TOKEN: &str = "admin_token";
const API_KEY: &str = "api_key";
const SESSION: &str = "session";
const CSRF: &str = "csrf";

/// Adds what every operation shares to the document the router produced.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        ADMIN_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The installation's admin token (`KEYPORT_ADMIN_TOKEN`, or printed once on first start). Acts in the workspace named by `X-Keyport-Workspace`.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A workspace API key (`POST /api/v1/api-keys`): acts in its own workspace. With the `act-as-user` permission, `X-Keyport-User` names the platform's user it acts for.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "keyport-session",
            "The web UI's session cookie (`__Host-keyport-session` behind https), set by signing in. Needs `X-CSRF-Token` and a same-origin `Origin` too.",
        ))),
    );
    components.add_security_scheme(
        CSRF,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "The session's CSRF token (`csrf_token` of the sign-in answer).",
        ))),
    );
    for (name, status, what) in ERRORS {
        components
            .responses
            .insert(name.to_string(), RefOr::T(error_response(status, what)));
    }
    doc.security = Some(vec![
        utoipa::openapi::security::SecurityRequirement::new(ADMIN_TOKEN, Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new(API_KEY, Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new(SESSION, Vec::<String>::new())
            .add(CSRF, Vec::<String>::new()),
    ]);
    let mut seen = std::collections::HashSet::new();
    for item in doc.paths.paths.values_mut() {
        for (method, op) in [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("options", &mut item.options),
            ("head", &mut item.head),
            ("patch", &mut item.patch),
        ] {
            let Some(op) = op else { continue };
            shared(op);
            // One handler serving several methods (the proxy) gets one id per method.
            if let Some(id) = &mut op.operation_id
                && !seen.insert(id.clone())
            {
                *id = format!("{id}_{method}");
                seen.insert(id.clone());
            }
        }
    }
    doc
}

/// The error answers by name: (name, status, when).
const ERRORS: [(&str, u16, &str); 8] = [
    (
        "BadRequest",
        400,
        "The request is malformed: a parameter or the body is not what this operation takes.",
    ),
    (
        "Unauthorized",
        401,
        "No credential, or one keyport does not know.",
    ),
    (
        "Forbidden",
        403,
        "The caller may not do this (role, permission, or a client outside the portal).",
    ),
    (
        "NotFound",
        404,
        "No such thing, or not one the caller may see.",
    ),
    (
        "Invalid",
        422,
        "The body is well-formed but a field is not valid; `fields` says which.",
    ),
    (
        "TooManyRequests",
        429,
        "Too many failed sign-ins or bearer tokens from this address: wait a minute.",
    ),
    (
        "PayloadTooLarge",
        413,
        "The body is larger than this operation takes.",
    ),
    (
        "Conflict",
        409,
        "Not possible in the current state; the message says what to do.",
    ),
];

fn error_response(status: u16, what: &str) -> utoipa::openapi::Response {
    let mut b = ResponseBuilder::new().description(what).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if status == 429 {
        b = b.header("Retry-After", retry_after());
    }
    b.build()
}

/// The `Retry-After` header of 429 and 503 answers.
fn retry_after() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Seconds to wait before trying again."))
        .build()
}

fn error_ref(op: &mut Operation, status: u16) {
    let key = status.to_string();
    if op.responses.responses.contains_key(&key) {
        // The operation describes this answer itself; give it the error body.
        if let Some(RefOr::T(r)) = op.responses.responses.get_mut(&key)
            && r.content.is_empty()
        {
            r.content.insert(
                "application/json".into(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            );
        }
        return;
    }
    if let Some((name, _, _)) = ERRORS.iter().find(|(_, s, _)| *s == status) {
        op.responses.responses.insert(
            key,
            RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))),
        );
    }
}

fn header(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(200)),
        ))
        .build()
}

/// What one operation shares with the others of its kind.
fn shared(op: &mut Operation) {
    let public = op.security.as_ref().is_some_and(|s| {
        s.iter()
            .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
    });
    let params = op.parameters.get_or_insert_with(Vec::new);
    if !public {
        params.push(header(
            "X-Keyport-Workspace",
            "The workspace the admin token acts in (default `default`). API keys and sessions act in their own.",
        ));
        params.push(header(
            "X-Keyport-User",
            "With an API key that has the `act-as-user` permission: the platform's id of the user to act for.",
        ));
    }
    // Public operations check the `Origin` (403) and count failed sign-ins (429) too; every
    // operation answers 404 for a workspace (or a token) that does not exist.
    let mut statuses = vec![400, 401, 403, 404, 429];
    if op.request_body.is_some() {
        statuses.extend([413, 422]);
    }
    // Statuses the operation names without a body are errors: they get the error body too.
    statuses.extend(
        op.responses
            .responses
            .keys()
            .filter_map(|k| k.parse::<u16>().ok())
            .filter(|s| *s >= 400),
    );
    for s in statuses {
        error_ref(op, s);
    }
    for (status, r) in op.responses.responses.iter_mut() {
        if status == "503"
            && let RefOr::T(r) = r
        {
            r.headers
                .entry("Retry-After".into())
                .or_insert_with(retry_after);
        }
    }
}
