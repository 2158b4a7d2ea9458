//! The single implementation of the `http` import.
//!
//! Order of checks for each request (any failure answers `http-error.denied` and nothing is sent):
//! imports enabled for this call → per-call request budget → no guest `Authorization`, `Cookie`,
//! `Proxy-Authorization` or `Host` header → URL resolved against the API base URL → egress rules
//! ([`super::egress`]) on the URL as written → endpoint overrides applied → egress address rule
//! on the rewritten URL and, through the client's resolver, on every address it connects to →
//! credential added → sent with no redirects, no proxy, connect and total timeouts → body read up
//! to the cap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::bindings::keyport::connector::http::{
    Host, HttpError, Method, Request, Response, SecretRef,
};
use super::egress::{self, Denied};
use super::{CallEnv, CredentialPlacement, HostState, RuntimeConfig, Secret, SecretKind};

/// The HTTP client shared by all calls: no redirects, no proxies, our resolver.
pub(super) fn client(config: &RuntimeConfig) -> anyhow::Result<Outbound> {
    outbound_client(
        config.allow_loopback,
        config.limits.connect_timeout,
        config.limits.request_timeout,
    )
}

/// An HTTP client for calls to providers (connectors' `http.send`, OAuth token requests): no
/// redirects, no proxies, connect and total timeouts, and a resolver that refuses private,
/// link-local and (without `allow_loopback`) loopback addresses.
pub fn outbound_client(
    allow_loopback: bool,
    connect_timeout: std::time::Duration,
    total_timeout: std::time::Duration,
) -> anyhow::Result<Outbound> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(total_timeout)
        .user_agent(concat!("keyport/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(CheckedResolver { allow_loopback }))
        .build()?;
    Ok(Outbound {
        client,
        allow_loopback,
    })
}

/// The HTTP client every request keyport sends out goes through: token, refresh, revocation and
/// discovery requests, webhook deliveries, proxied calls and connectors' `http.send`.
///
/// The address rules ([`egress::check_addr`]) apply to every request: to names through the
/// client's resolver (the connection is made to a checked address), and to IP literals here,
/// before anything is sent, in every form the URL parser accepts (`127.0.0.1`, `0x7f000001`,
/// `2130706433`, `[::1]`, `[::ffff:127.0.0.1]`, …), since a literal never reaches a resolver.
/// Redirects are never followed.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    allow_loopback: bool,
}

impl Outbound {
    /// A request to `url`, or why the address rules refuse it.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> Result<reqwest::RequestBuilder, Denied> {
        check_literal(&url, self.allow_loopback)?;
        Ok(self.client.request(method, url))
    }

    /// A request to a URL given as text.
    pub fn request_str(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Denied> {
        let parsed = url::Url::parse(url).map_err(|e| Denied(format!("not a URL: {e}")))?;
        self.request(method, parsed)
    }
}

/// The address rule for a URL whose host is an IP literal; names pass (the resolver checks
/// what they resolve to).
pub fn check_literal(url: &url::Url, allow_loopback: bool) -> Result<(), Denied> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        // The URL parser turns every address spelling into the two cases above.
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(Denied("the URL has no host".into())),
    };
    egress::check_addr(ip, allow_loopback)
}

/// Resolves names and keeps only the addresses the egress policy allows, so the connection is
/// made to a checked address.
struct CheckedResolver {
    allow_loopback: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let allowed = checked_lookup(name.as_str(), allow_loopback).await?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The addresses `host` resolves to that the egress rules allow; an error when there are none.
pub(super) async fn checked_lookup(
    host: &str,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match egress::check_addr(a.ip(), allow_loopback) {
            Ok(()) => true,
            Err(e) => {
                refusal.get_or_insert(e);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        let why = refusal
            .map(|d| d.0)
            .unwrap_or_else(|| "no addresses".into());
        return Err(Box::new(Denied(format!(
            "{host} resolves to a refused address: {why}"
        ))));
    }
    Ok(allowed)
}

const FORBIDDEN_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "host"];

impl Host for HostState {
    async fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let id = self
            .manifest
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        let result = self.send_checked(request).await;
        if let Err(HttpError::Denied(why)) = &result {
            tracing::warn!(connector = %id, reason = %why, "connector request refused");
        }
        result
    }
}

impl HostState {
    async fn send_checked(&mut self, request: Request) -> Result<Response, HttpError> {
        let denied = |s: String| HttpError::Denied(s);
        if !self.imports_enabled {
            return Err(denied("http is not available in this hook".into()));
        }
        let Some(manifest) = self.manifest.clone() else {
            return Err(denied(
                "http is not available before the manifest is loaded".into(),
            ));
        };
        if self.requests_sent >= self.runtime.config.limits.max_requests_per_call {
            return Err(denied(format!(
                "at most {} requests per call",
                self.runtime.config.limits.max_requests_per_call
            )));
        }
        self.requests_sent += 1;
        for (name, _) in &request.headers {
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
                return Err(denied(format!(
                    "connectors may not set the {name} header; the host adds the credential"
                )));
            }
        }

        let env = self.env.clone();
        let allow_loopback = self.runtime.config.allow_loopback;
        let mut url = checked_target(&manifest.egress_hosts, &env, &request.url, allow_loopback)
            .map_err(denied)?;
        if let Some(log) = &env.request_log
            && let Ok(mut log) = log.lock()
        {
            let method = format!("{:?}", request.method);
            let method = method.rsplit("::").next().unwrap_or(&method).to_uppercase();
            log.push(format!("{method} {url}"));
        }

        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in api_headers(&manifest.api_headers, &env).map_err(denied)? {
            headers.append(name, value);
        }
        for (name, value) in request.headers.iter() {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| denied(format!("invalid header name {name:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| denied(format!("invalid value for header {name}")))?;
            headers.append(name, value);
        }
        let mut body = request.body;
        if request.authenticate {
            let Some(credential) = env.credential.as_ref() else {
                return Err(denied("this call has no credential to add".into()));
            };
            add_credential(
                &manifest.credential,
                credential,
                &env,
                &mut headers,
                &mut url,
            )
            .map_err(denied)?;
        }
        if !request.form_secrets.is_empty() {
            body = Some(form_with_secrets(
                body.take().unwrap_or_default(),
                &request.form_secrets,
                &env,
            )?);
        }

        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
        };
        tracing::debug!(
            connector = %manifest.id,
            method = %method,
            host = url.host_str().unwrap_or_default(),
            path = url.path(),
            "connector request"
        );
        let mut req = self
            .runtime
            .http
            .request(method, url)
            .map_err(|d| denied(d.0))?
            .headers(headers);
        if let Some(body) = body {
            req = req.body(body);
        }
        let response = req.send().await.map_err(transport_error)?;
        read_capped(response, self.runtime.config.limits.max_response_bytes).await
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// It is (or declares itself) larger than the cap.
    TooLarge,
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// Reads a response body against `cap`: refused by its declared length, or as soon as what
/// arrived would pass the cap, so a provider cannot make keyport hold more than `cap` bytes.
pub async fn body_capped(response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n as usize > cap) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Transport)?;
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A form body with the host's secrets appended as `field=value` pairs (the connector names the
/// field and which secret; it never sees the value).
fn form_with_secrets(
    mut form: Vec<u8>,
    fields: &[(String, SecretRef)],
    env: &CallEnv,
) -> Result<Vec<u8>, HttpError> {
    for (field, which) in fields {
        let kind = match which {
            SecretRef::AccessToken => SecretKind::AccessToken,
            SecretRef::RefreshToken => SecretKind::RefreshToken,
            SecretRef::ApiKey => SecretKind::ApiKey,
            SecretRef::ClientId => SecretKind::ClientId,
            SecretRef::ClientSecret => SecretKind::ClientSecret,
        };
        let value = env
            .form_secrets
            .get(&kind)
            .ok_or_else(|| HttpError::Denied(format!("this call has no {kind:?} to add")))?;
        if !form.is_empty() {
            form.push(b'&');
        }
        let pair: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(field, value.expose())
            .finish();
        form.extend_from_slice(pair.as_bytes());
    }
    Ok(form)
}

/// The provider's answer for the guest: status, headers without `Set-Cookie`, and a body read
/// against `cap` (refused as soon as it would pass it).
async fn read_capped(response: reqwest::Response, cap: usize) -> Result<Response, HttpError> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "set-cookie")
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = body_capped(response, cap).await.map_err(|e| match e {
        BodyError::TooLarge => HttpError::TooLarge(cap as u64),
        BodyError::Transport(e) => transport_error(e),
    })?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Resolves `raw` against the call's API base URL, checks it against the egress policy (hosts the
/// manifest declares and the admin granted, https, address rules) and applies the admin's
/// endpoint overrides, whose targets must still pass the address rules.
pub fn checked_target(
    egress_hosts: &[String],
    env: &CallEnv,
    raw: &str,
    allow_loopback: bool,
) -> Result<url::Url, String> {
    checked_url(
        egress_hosts,
        env,
        resolve_url(raw, env.api_base_url.as_deref())?,
        allow_loopback,
    )
}

/// [`checked_target`] for a URL already parsed (the proxy's, which it built under the base).
pub fn checked_url(
    egress_hosts: &[String],
    env: &CallEnv,
    url: url::Url,
    allow_loopback: bool,
) -> Result<url::Url, String> {
    // Patterns with placeholders count as the hosts they filled to for this connection
    // (`resolved_hosts`, already limited to what the admin granted).
    let fixed = egress_hosts
        .iter()
        .map(String::as_str)
        .filter(|h| !h.contains('{'));
    let mut granted: Vec<&str> = match &env.granted_hosts {
        Some(g) => fixed
            .filter(|h| g.iter().any(|x| x.eq_ignore_ascii_case(h)))
            .collect(),
        None => fixed.collect(),
    };
    granted.extend(env.resolved_hosts.iter().map(String::as_str));
    egress::check_url(&url, &granted, allow_loopback).map_err(|d| d.0)?;
    let Some((from, to)) = env
        .endpoint_overrides
        .iter()
        .find(|(from, _)| url.as_str().starts_with(from.as_str()))
    else {
        return Ok(url);
    };
    let rewritten = format!("{to}{}", &url.as_str()[from.len()..]);
    let url = url::Url::parse(&rewritten).map_err(|e| format!("bad endpoint override: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("endpoint overrides must be http(s) URLs".into());
    }
    check_literal(&url, allow_loopback).map_err(|d| d.0)?;
    Ok(url)
}

/// The manifest's API headers for a call, placeholders filled from the connection (config,
/// token-response fields, `{client_id}`); a header that fills to empty is left out.
pub fn api_headers(
    api_headers: &[(String, String)],
    env: &CallEnv,
) -> Result<Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>, String> {
    let client_id = env.client_id().unwrap_or_default();
    let extra = [("client_id", client_id)];
    let vars = env.vars(&extra);
    let mut out = Vec::new();
    for (name, template) in api_headers {
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = super::template::fill(template, &vars, super::template::Use::Header)
            .map_err(|e| format!("the {name} header: {e}"))?;
        if value.is_empty() {
            continue;
        }
        let value = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        out.push((header, value));
    }
    Ok(out)
}

/// Adds the credential to a request the way the manifest says. A header placement's prefix may
/// be a template holding `{credential}` (`OAuth key="{app_key}", token="{credential}"`); without
/// it the credential follows the prefix.
pub fn add_credential(
    placement: &CredentialPlacement,
    credential: &Secret,
    env: &CallEnv,
    headers: &mut reqwest::header::HeaderMap,
    url: &mut url::Url,
) -> Result<(), String> {
    let value =
        |v: &str| sensitive(v).map_err(|_| "the credential cannot be sent in a header".to_string());
    match placement {
        CredentialPlacement::Bearer => {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                value(&format!("Bearer {}", credential.expose()))?,
            );
        }
        CredentialPlacement::Header((name, prefix)) => {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| "the manifest's credential header name is invalid".to_string())?;
            let full = if prefix.contains('{') {
                let has_slot = super::template::parse(prefix)
                    .map_err(|e| format!("the manifest's credential header: {e}"))?
                    .iter()
                    .any(|p| p.fields().any(|f| f == "credential"));
                let client_id = env.client_id().unwrap_or_default();
                let extra = [
                    ("credential", credential.expose()),
                    ("client_id", client_id),
                ];
                let filled =
                    super::template::fill(prefix, &env.vars(&extra), super::template::Use::Header)
                        .map_err(|e| format!("the {name} header: {e}"))?;
                if has_slot {
                    filled
                } else {
                    format!("{filled}{}", credential.expose())
                }
            } else {
                format!("{prefix}{}", credential.expose())
            };
            headers.insert(name, value(&full)?);
        }
        CredentialPlacement::Query(param) => {
            url.query_pairs_mut()
                .append_pair(param, credential.expose());
        }
        CredentialPlacement::BasicUsername => {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:", credential.expose()));
            headers.insert(
                reqwest::header::AUTHORIZATION,
                value(&format!("Basic {b}"))?,
            );
        }
    }
    Ok(())
}

fn sensitive(value: &str) -> Result<reqwest::header::HeaderValue, HttpError> {
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| HttpError::Denied("the credential cannot be sent in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// An absolute URL, or a path resolved against the API base URL.
pub(super) fn resolve_url(raw: &str, base: Option<&str>) -> Result<url::Url, String> {
    match url::Url::parse(raw) {
        Ok(u) => Ok(u),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let base = base.filter(|b| !b.is_empty()).ok_or_else(|| {
                format!("relative URL {raw:?} but the connection has no API base URL")
            })?;
            let base = url::Url::parse(base).map_err(|e| format!("invalid API base URL: {e}"))?;
            base.join(raw.trim_start_matches('/'))
                .map_err(|e| format!("invalid URL {raw:?}: {e}"))
        }
        Err(e) => Err(format!("invalid URL {raw:?}: {e}")),
    }
}

/// Maps a client error to the contract's error, keeping the egress refusal when that was the cause.
/// The message never includes the URL (it may carry a credential as a query parameter).
fn transport_error(e: reqwest::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<Denied>() {
            return HttpError::Denied(d.0.clone());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return HttpError::Timeout;
    }
    HttpError::Transport(error_chain(&e.without_url()))
}

/// An error and its causes, `: `-separated (the messages of client errors keyport reports).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::{check_literal, resolve_url};

    fn literal(url: &str, allow_loopback: bool) -> Result<(), String> {
        check_literal(&url::Url::parse(url).unwrap(), allow_loopback).map_err(|d| d.0)
    }

    #[test]
    fn ip_literals_in_every_form_meet_the_address_rules() {
        // Loopback in every spelling the URL parser turns into an address (never sent: this
        // only parses and classifies).
        for url in [
            "https://127.0.0.1/token",
            "https://127.0.0.1:8443/token",
            "https://[::1]/token",
            "https://[::ffff:127.0.0.1]/token",
            "https://[::ffff:7f00:1]/token",
            "https://0x7f000001/token",
            "https://2130706433/token",
            "https://0177.0.0.1/token",
            "https://127.1/token",
            "http://127.0.0.1./hook",
        ] {
            let refused = literal(url, false).expect_err(url);
            assert!(refused.contains("loopback"), "{url}: {refused}");
            assert!(literal(url, true).is_ok(), "{url} with the loopback grant");
        }
        // Names are left to the resolver, which filters what they resolve to.
        assert!(literal("https://oauth2.googleapis.com/token", false).is_ok());
        assert!(literal("https://8.8.8.8/", false).is_ok());
    }

    #[test]
    fn relative_urls_resolve_against_the_base() {
        let base = Some("https://slack.com/api/");
        assert_eq!(
            resolve_url("auth.test", base).unwrap().as_str(),
            "https://slack.com/api/auth.test"
        );
        assert_eq!(
            resolve_url("/auth.test", base).unwrap().as_str(),
            "https://slack.com/api/auth.test"
        );
        assert_eq!(
            resolve_url("https://x.com/a", base).unwrap().as_str(),
            "https://x.com/a"
        );
        assert!(resolve_url("auth.test", None).is_err());
    }
}
