//! `/api/v1` handlers for connection requests: the asking side (create, list, cancel, resend)
//! and the client's (open the link, see the portal, connect).

use super::schema;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::people::signed_in;
use super::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::{Caller, people, sessions};
use crate::connections::{FlowBrowser, NewRequest, RequestRow, Who, request_view, rfc3339};

type R<T> = Result<T, ApiError>;

fn link(s: &AppState, token: &str) -> String {
    format!("{}/portal/join#{token}", s.service.config.public_url)
}

/// Emails the requests of one link when SMTP is configured: `true`, `false` (no SMTP) or what
/// the mail server said.
async fn email(s: &AppState, caller: &Caller, rows: &[RequestRow], link: &str) -> Value {
    let (Some(m), Some(first)) = (&s.mailer, rows.first()) else {
        return json!(false);
    };
    let apps = rows
        .iter()
        .map(|r| s.registry.display_name(&r.connector_id))
        .collect();
    let asked_by = match &caller.principal.who {
        Who::User { label, .. } => label.clone(),
        _ => "The team".to_string(),
    };
    let (workspace, _) = people::branding(&s.service, &first.workspace_id).await;
    let mail = crate::mail::RequestMail {
        to: &first.client_email,
        workspace: &workspace,
        asked_by: &asked_by,
        apps,
        message: first.message.as_deref(),
        link,
        expires_at: &rfc3339(first.expires_at),
    };
    match m.send_request(&mail).await {
        Ok(()) => json!(true),
        Err(e) => {
            tracing::warn!(error = %e, "could not email a connection request");
            json!({"error": format!("the mail server refused it ({e}); send the link yourself")})
        }
    }
}

/// `POST /api/v1/connection-requests`: the link is shown once (and emailed with SMTP).
#[utoipa::path(
    post,
    path = "/api/v1/connection-requests",
    operation_id = "create_connection_requests",
    tag = "connection-requests",
    summary = "Asks a client to connect one or more apps: one link, emailed when SMTP is set up",
    request_body = NewRequest,
    responses(
        (status = 201, description = "The requests and their link (shown once)", body = schema::RequestsCreated)
    ),
)]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(n): ApiJson<NewRequest>,
) -> R<impl IntoResponse> {
    let (rows, token) = s.service.create_requests(&caller.principal, n).await?;
    let link = link(&s, &token);
    let emailed = email(&s, &caller, &rows, &link).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "connection_requests": rows.iter().map(request_view).collect::<Vec<_>>(),
            "link": link,
            "emailed": emailed,
            "note": "This link is shown only once; it works once, until it expires.",
        })),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
}

/// `GET /api/v1/connection-requests?status=`.
#[utoipa::path(
    get,
    path = "/api/v1/connection-requests",
    operation_id = "list_connection_requests",
    tag = "connection-requests",
    summary = "The workspace's connection requests",
    params(ListQuery),
    responses(
        (status = 200, description = "The requests", body = schema::Requests)
    ),
)]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<Json<Value>> {
    Ok(Json(
        s.service
            .list_requests(&caller.principal, q.status.as_deref())
            .await?,
    ))
}

/// `GET /api/v1/connection-requests/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/connection-requests/{id}",
    operation_id = "get_connection_request",
    tag = "connection-requests",
    summary = "One connection request",
    params(("id" = String, Path, description = "The request's id.")),
    responses(
        (status = 200, description = "The request", body = schema::RequestView<'static>)
    ),
)]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    Ok(Json(request_view(
        &s.service.request(&caller.principal, &id).await?,
    )))
}

/// `POST /api/v1/connection-requests/{id}/cancel` (the asking side only).
#[utoipa::path(
    post,
    path = "/api/v1/connection-requests/{id}/cancel",
    operation_id = "cancel_connection_request",
    tag = "connection-requests",
    summary = "Cancels an outstanding request (its link stops working)",
    params(("id" = String, Path, description = "The request's id.")),
    responses(
        (status = 200, description = "The request", body = schema::RequestView<'static>),
        (status = 409, description = "No longer outstanding")
    ),
)]
pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    Ok(Json(request_view(
        &s.service.cancel_request(&caller.principal, &id).await?,
    )))
}

/// `POST /api/v1/connection-requests/{id}/resend`: a new link (shown once); the old one dies.
#[utoipa::path(
    post,
    path = "/api/v1/connection-requests/{id}/resend",
    operation_id = "resend_connection_request",
    tag = "connection-requests",
    summary = "Issues a new link for an outstanding request (the old one stops working)",
    params(("id" = String, Path, description = "The request's id.")),
    responses(
        (status = 200, description = "The request and its new link (shown once)", body = schema::RequestResent),
        (status = 409, description = "No longer outstanding")
    ),
)]
pub async fn resend(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    let (row, token) = s.service.resend_request(&caller.principal, &id).await?;
    let link = link(&s, &token);
    let emailed = email(&s, &caller, std::slice::from_ref(&row), &link).await;
    Ok(Json(json!({
        "connection_request": request_view(&row),
        "link": link,
        "emailed": emailed,
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    token: String,
}

/// `POST /api/v1/connection-requests/join {token}`: opens a request link once and signs the
/// client in to the portal.
#[utoipa::path(
    post,
    path = "/api/v1/connection-requests/join",
    operation_id = "join_with_request_link",
    tag = "connection-requests",
    summary = "Signs a client in with a request link's token (once)",
    request_body = JoinBody,
    responses(
        (status = 200, description = "Signed in (the session cookie is set)", body = schema::SignedIn)
    ),
    security(()),
)]
pub async fn join(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<JoinBody>,
) -> R<Response> {
    sessions::same_origin(&s.service, &headers)?;
    let (cookie, session) = people::join_with_request_link(&s.service, &b.token).await?;
    let user = match &session.user_id {
        Some(u) => people::user_view(&people::user(&s.service, u).await?),
        None => Value::Null,
    };
    Ok(signed_in(&s, &cookie, &session, user))
}

/// `GET /api/v1/portal`: the signed-in client's outstanding requests and connections.
#[utoipa::path(
    get,
    path = "/api/v1/portal",
    operation_id = "portal",
    tag = "portal",
    summary = "The signed-in client's open requests and connections",
    responses(
        (status = 200, description = "The portal", body = schema::Portal)
    ),
)]
pub async fn portal(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    let email = people::email_of(&s.service, &caller.principal).await?;
    Ok(Json(s.service.portal(&caller.principal, &email).await?))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectBody {
    return_to: Option<String>,
}

/// `POST /api/v1/connection-requests/{id}/connect {return_to?}`: the client starts the
/// authorization the request asks for.
#[utoipa::path(
    post,
    path = "/api/v1/connection-requests/{id}/connect",
    operation_id = "connect_connection_request",
    tag = "portal",
    summary = "Starts the OAuth flow a request asks for (the client it was sent to)",
    params(("id" = String, Path, description = "The request's id.")),
    request_body = Option<ConnectBody>,
    responses(
        (status = 200, description = "The link that continues the flow", body = schema::OAuthStarted),
        (status = 409, description = "No longer outstanding, or no provider app")
    ),
)]
pub async fn connect(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> R<Json<Value>> {
    let b: ConnectBody = super::optional_json(&body)?;
    let email = people::email_of(&s.service, &caller.principal).await?;
    let started = s
        .service
        .connect_request(
            &caller.principal,
            &email,
            &id,
            FlowBrowser {
                return_to: b.return_to,
                session: caller.session.clone(),
                request: None,
            },
        )
        .await?;
    Ok(Json(serde_json::to_value(started).unwrap_or_default()))
}
