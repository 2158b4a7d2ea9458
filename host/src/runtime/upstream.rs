//! The proxy's upstream client: hyper-util's pooled HTTP/1.1 client used directly, with the same
//! rules as [`super::Outbound`] (no redirects, no proxies, the checked resolver, IP literals
//! checked before sending, rustls with the webpki roots, connect and total timeouts).
//!
//! A proxied call forwards a request that is already an `http` request in all but its URI, and
//! streams the answer back as it came. reqwest, which [`super::Outbound`] wraps, would convert
//! the URL into a URI again, merge its default headers, box the call's future and wrap the answer
//! in its own body and timeout types on every call; here the call is hyper's own.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::egress::Denied;
use super::http::error_chain;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connector = hyper_rustls::HttpsConnector<HttpConnector<CheckedDns>>;

/// What keyport says it is to providers (as [`super::Outbound`] does).
const USER_AGENT: &str = concat!("keyport/", env!("CARGO_PKG_VERSION"));

/// The proxy's client; cheap to clone (the pool is shared by clones).
#[derive(Clone)]
pub struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    allow_loopback: bool,
    total_timeout: Duration,
}

/// Why a call to the provider failed, without its URL (a query parameter may hold a credential).
#[derive(Debug)]
pub enum UpstreamError {
    /// The address rules refuse the URL's IP literal; nothing was sent.
    Denied(Denied),
    /// The URL cannot be sent as a request target.
    BadTarget(String),
    /// Connecting, sending or reading the answer's head failed, or took longer than the total
    /// timeout; the message carries every cause.
    Failed(String),
}

impl Upstream {
    /// A client: connections made only to addresses the egress rules allow (loopback only with
    /// `allow_loopback`), `connect_timeout` to connect, `total_timeout` for the whole call
    /// including the answer's body.
    pub fn new(
        allow_loopback: bool,
        connect_timeout: Duration,
        total_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new_with_resolver(CheckedDns { allow_loopback });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Upstream {
            client,
            allow_loopback,
            total_timeout,
        })
    }

    /// Sends a request and returns the answer's head with its body still to be read; the body
    /// fails once the total timeout has passed since the call began.
    pub async fn send(
        &self,
        method: Method,
        url: &url::Url,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<DeadlineBody>, UpstreamError> {
        super::http::check_literal(url, self.allow_loopback).map_err(UpstreamError::Denied)?;
        let uri: http::Uri = url
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| UpstreamError::BadTarget(e.to_string()))?;
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
        }
        if !headers.contains_key(http::header::ACCEPT) {
            headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        }
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        // One timer for the whole call: it bounds the answer's head here, then its body.
        let mut sleep = Box::pin(tokio::time::sleep(self.total_timeout));
        use futures::future::Either;
        let resp = match futures::future::select(self.client.request(req), sleep.as_mut()).await {
            Either::Left((Ok(resp), _)) => resp,
            Either::Left((Err(e), _)) => return Err(UpstreamError::Failed(error_chain(&e))),
            Either::Right(_) => {
                return Err(UpstreamError::Failed(format!(
                    "no answer within {}",
                    humantime::format_duration(self.total_timeout)
                )));
            }
        };
        Ok(resp.map(|body| DeadlineBody {
            body,
            sleep,
            total: self.total_timeout,
        }))
    }
}

/// An answer's body that fails once the call's total time is up.
#[derive(Debug)]
pub struct DeadlineBody {
    body: hyper::body::Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    total: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            let total = humantime::format_duration(self.total);
            return Poll::Ready(Some(Err(format!(
                "the provider's answer took longer than {total}"
            )
            .into())));
        }
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(|e| error_chain(&e).into())
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The resolver: system lookup, then only the addresses the egress rules allow, so the
/// connection is made to a checked address.
#[derive(Clone)]
struct CheckedDns {
    allow_loopback: bool,
}

impl tower_service::Service<Name> for CheckedDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let allowed = super::http::checked_lookup(name.as_str(), allow_loopback).await?;
            Ok(allowed.into_iter())
        })
    }
}

/// An [`Upstream`] per thread. Each HTTP serving thread runs its own event loop; with its own
/// client, the pooled upstream connections a proxied call uses are driven by the same thread as
/// the call, instead of handing every request and answer to another thread.
pub struct LocalUpstream {
    /// Tells this client's per-thread instances from other `LocalUpstream`s' in the thread.
    id: u64,
    allow_loopback: bool,
    connect_timeout: Duration,
    total_timeout: Duration,
    /// Used if a thread's own client cannot be built (it was built once at start, so in practice
    /// never).
    shared: Upstream,
}

impl LocalUpstream {
    /// Clients with these settings, one per thread that uses them.
    pub fn new(
        allow_loopback: bool,
        connect_timeout: Duration,
        total_timeout: Duration,
    ) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(LocalUpstream {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            allow_loopback,
            connect_timeout,
            total_timeout,
            shared: Upstream::new(allow_loopback, connect_timeout, total_timeout)?,
        })
    }

    /// This thread's client.
    pub fn get(&self) -> Upstream {
        thread_local! {
            static CLIENTS: std::cell::RefCell<Vec<(u64, Upstream)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        CLIENTS.with_borrow_mut(|clients| {
            if let Some((_, c)) = clients.iter().find(|(id, _)| *id == self.id) {
                return c.clone();
            }
            match Upstream::new(
                self.allow_loopback,
                self.connect_timeout,
                self.total_timeout,
            ) {
                Ok(c) => {
                    clients.push((self.id, c.clone()));
                    c
                }
                Err(_) => self.shared.clone(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on 127.0.0.1 that counts connections and answers each request with `head` and
    /// the request's own head as the body, then (with `stall`) never finishes the body.
    async fn server(stall: bool) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let len = if stall { head.len() + 10 } else { head.len() };
                    // One request per connection: the client must not pool it.
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n"
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.write_all(&head).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        (port, accepted)
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    /// A GET of `target` without headers or body.
    async fn get(
        up: &Upstream,
        target: &str,
    ) -> Result<http::Response<DeadlineBody>, UpstreamError> {
        up.send(Method::GET, &url(target), HeaderMap::new(), Bytes::new())
            .await
    }

    #[tokio::test]
    async fn loopback_is_refused_before_connecting_unless_allowed() {
        let (port, accepted) = server(false).await;
        let refusing =
            Upstream::new(false, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        for target in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
            format!("http://2130706433:{port}/x"),
        ] {
            let e = get(&refusing, &target).await.unwrap_err();
            assert!(matches!(e, UpstreamError::Denied(_)), "{target}: {e:?}");
        }
        // A name is checked after it resolves, before the connection is made.
        let e = get(&refusing, &format!("http://localhost:{port}/x"))
            .await
            .unwrap_err();
        let UpstreamError::Failed(why) = e else {
            panic!("{e:?}")
        };
        assert!(why.contains("resolves to a refused address"), "{why}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        let allowing = Upstream::new(true, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        let resp = get(&allowing, &format!("http://127.0.0.1:{port}/x"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn requests_say_who_sends_them_and_keep_the_callers_headers() {
        use http_body_util::BodyExt;
        let (port, _) = server(false).await;
        let up = Upstream::new(true, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        let seen = |headers: HeaderMap| {
            let up = up.clone();
            async move {
                let resp = up
                    .send(
                        Method::POST,
                        &url(&format!("http://127.0.0.1:{port}/a/b?c=1")),
                        headers,
                        Bytes::from_static(b"{}"),
                    )
                    .await
                    .unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8(body.to_vec())
                    .unwrap()
                    .to_ascii_lowercase()
            }
        };
        let head = seen(HeaderMap::new()).await;
        assert!(head.starts_with("post /a/b?c=1 http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(head.contains("user-agent: keyport/"), "{head}");
        assert!(head.contains("accept: */*\r\n"), "{head}");
        let mut mine = HeaderMap::new();
        mine.insert(http::header::ACCEPT, HeaderValue::from_static("text/csv"));
        let head = seen(mine).await;
        assert!(head.contains("accept: text/csv\r\n"), "{head}");
        assert_eq!(head.matches("accept:").count(), 1, "{head}");
    }

    #[tokio::test]
    async fn an_answer_still_coming_at_the_total_timeout_fails() {
        use http_body_util::BodyExt;
        let (port, _) = server(true).await;
        let up = Upstream::new(true, Duration::from_secs(5), Duration::from_millis(300)).unwrap();
        let resp = get(&up, &format!("http://127.0.0.1:{port}/slow"))
            .await
            .expect("the head arrives in time");
        let e = resp.into_body().collect().await.unwrap_err();
        assert!(e.to_string().contains("took longer than"), "{e}");
    }
}
