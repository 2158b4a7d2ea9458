//! Egress policy: where a connector's `http.send` may go.
//!
//! A request is allowed only when every rule below passes, in this order:
//!
//! | rule | accepted | refused with |
//! |---|---|---|
//! | scheme | `https`; `http` only with the loopback grant | "only https URLs are allowed" |
//! | credentials in URL | none | "URLs may not carry user info" |
//! | host pattern | a manifest `egress-hosts` entry the admin granted: exact (`slack.com`) or one leading wildcard label (`*.hubapi.com`, which does not match `hubapi.com` itself) | "host X is not in the connector's egress list" |
//! | address | every resolved address is public: not loopback, private (RFC 1918, ULA), link-local, CGNAT, unspecified, multicast, broadcast, documentation or an IPv4-mapped form of those; loopback is allowed only with the loopback grant | "X resolves to a loopback/private address" |
//!
//! An empty egress list denies everything. The address rule is applied to the addresses the
//! connection is actually made to (the HTTP client's resolver filters them), so a name cannot
//! change between check and use. Patterns are compared case-insensitively, without a trailing dot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Checks a host pattern from a manifest: `name.example` or `*.name.example`.
pub fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if name.parse::<IpAddr>().is_ok() {
        return !pattern.starts_with("*.");
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `host` matches one of `patterns`.
pub fn host_allowed(host: &str, patterns: &[impl AsRef<str>]) -> bool {
    let host = host.trim_end_matches('.');
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .as_bytes();
    patterns.iter().any(|p| {
        let p = p.as_ref().trim_end_matches('.');
        match p.strip_prefix("*.") {
            // At least one label, a dot, then the suffix (compared as bytes: no allocation and
            // no char boundary to respect).
            Some(suffix) => {
                let suffix = suffix.as_bytes();
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
            None => host.eq_ignore_ascii_case(p.as_bytes()),
        }
    })
}

/// The class of an address, for the address rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Routable on the internet.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// Anything else that must not be reached: private, link-local (cloud metadata), CGNAT,
    /// unspecified, multicast, broadcast, reserved, documentation.
    Internal,
}

/// Classifies an address; IPv4-mapped and IPv4-compatible IPv6 addresses are judged as IPv4.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            classify_v6(v6)
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240
    {
        AddrClass::Internal
    } else {
        AddrClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let seg = ip.segments();
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
        || seg[0] == 0x0064 && seg[1] == 0xff9b // NAT64 (may reach internal IPv4)
        || (seg[0..6] == [0, 0, 0, 0, 0, 0])
    // IPv4-compatible
    {
        AddrClass::Internal
    } else {
        AddrClass::Public
    }
}

/// The address rule.
pub fn check_addr(ip: IpAddr, allow_loopback: bool) -> Result<(), Denied> {
    match classify(ip) {
        AddrClass::Public => Ok(()),
        AddrClass::Loopback if allow_loopback => Ok(()),
        AddrClass::Loopback => Err(Denied(format!(
            "{ip} is a loopback address; connectors may not reach it (KEYPORT_ALLOW_LOOPBACK grants it for local development)"
        ))),
        AddrClass::Internal => Err(Denied(format!(
            "{ip} is a private, link-local or reserved address; connectors may not reach it"
        ))),
    }
}

/// The scheme, user-info and host rules, on a parsed URL.
pub fn check_url(
    url: &url::Url,
    patterns: &[impl AsRef<str>],
    allow_loopback: bool,
) -> Result<(), Denied> {
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback => {}
        other => {
            return Err(Denied(format!("only https URLs are allowed, not {other}:")));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Denied("URLs may not carry user info".into()));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Denied("the URL has no host".into()))?;
    if !host_allowed(host, patterns) {
        return Err(Denied(format!(
            "host {host} is not in the connector's egress list (granted: {})",
            if patterns.is_empty() {
                "none".to_string()
            } else {
                patterns
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<&str>>()
                    .join(", ")
            }
        )));
    }
    if let Some(ip) = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    } {
        check_addr(ip, allow_loopback)?;
    }
    Ok(())
}

/// The endpoints of an OAuth scheme that receive secrets (codes, PKCE verifiers, refresh tokens,
/// the client secret): token, refresh and revocation URLs, by field.
fn secret_endpoints(o: &super::Oauth2) -> Vec<(&'static str, &str)> {
    let mut out = vec![("token_url", o.token_url.as_str())];
    if let Some(u) = &o.refresh_url {
        out.push(("refresh_url", u.as_str()));
    }
    if let Some(u) = &o.revoke_url {
        out.push(("revoke_url", u.as_str()));
    }
    out
}

/// For connectors whose egress is granted by an admin (uploads): every endpoint that receives
/// secrets must be https (plain http only in test mode) on a host the egress list covers, so
/// approving the egress hosts is approving where secrets go. `{placeholders}` in a host are
/// sampled (`{subdomain}.example.com` is covered by `*.example.com`). Returns the endpoints'
/// hosts, or (field, why) for each that is not covered.
pub fn oauth_endpoints_covered(
    o: &super::Oauth2,
    egress_hosts: &[String],
    allow_loopback: bool,
) -> Result<Vec<String>, Vec<(String, String)>> {
    let mut hosts = Vec::new();
    let mut problems = Vec::new();
    for (field, raw) in secret_endpoints(o) {
        let sampled = super::template::sample(raw);
        let url = match url::Url::parse(&sampled) {
            Ok(u) => u,
            Err(e) => {
                problems.push((field.to_string(), format!("{raw:?} is not a URL: {e}")));
                continue;
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if allow_loopback => {}
            other => {
                problems.push((
                    field.to_string(),
                    format!("{raw} must be https (not {other}:): it receives secrets"),
                ));
                continue;
            }
        }
        let host = url.host_str().unwrap_or_default().to_string();
        if !host_allowed(&host, egress_hosts) {
            problems.push((
                field.to_string(),
                format!(
                    "{raw} is on {host}, which the connector's egress hosts ({}) do not cover; declare it so an admin grants it",
                    egress_hosts.join(", ")
                ),
            ));
            continue;
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if problems.is_empty() {
        Ok(hosts)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_patterns() {
        let pats = p(&["slack.com", "*.hubapi.com"]);
        for (host, ok) in [
            ("slack.com", true),
            ("SLACK.com.", true),
            ("api.slack.com", false),
            ("evilslack.com", false),
            ("api.hubapi.com", true),
            ("a.b.hubapi.com", true),
            ("API.HubAPI.COM.", true),
            // Non-ASCII bytes where the suffix starts: compared as bytes, never split in a char.
            ("ü.hubapi.com", true),
            ("éhubapi.com", false),
            ("ééééééééééé", false),
            ("hubapi.com", false),
            ("xhubapi.com", false),
            ("hubapi.com.evil.net", false),
        ] {
            assert_eq!(host_allowed(host, &pats), ok, "{host}");
        }
        assert!(
            !host_allowed("slack.com", &[] as &[&str]),
            "an empty list denies everything"
        );
    }

    #[test]
    fn pattern_syntax() {
        for ok in [
            "slack.com",
            "*.hubapi.com",
            "localhost",
            "127.0.0.1",
            "a-b.c",
        ] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.com",
            "a_b.com",
            "*.127.0.0.1",
            "https://x.com",
            "x.com/path",
            "**.x.com",
        ] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn address_classes() {
        use AddrClass::*;
        for (ip, class) in [
            ("8.8.8.8", Public),
            ("2606:4700::1111", Public),
            ("127.0.0.1", Loopback),
            ("127.9.9.9", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("10.1.2.3", Internal),
            ("172.16.0.1", Internal),
            ("192.168.1.1", Internal),
            ("169.254.169.254", Internal),
            ("100.64.0.1", Internal),
            ("0.0.0.0", Internal),
            ("::", Internal),
            ("fd00:ec2::254", Internal),
            ("fe80::1", Internal),
            ("::ffff:10.0.0.1", Internal),
            ("::ffff:169.254.169.254", Internal),
            ("224.0.0.1", Internal),
            ("255.255.255.255", Internal),
            ("64:ff9b::a00:1", Internal),
        ] {
            assert_eq!(classify(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn loopback_needs_the_grant() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_addr(ip, false).is_err());
        assert!(check_addr(ip, true).is_ok());
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(
            check_addr(private, true).is_err(),
            "the loopback grant does not open private ranges"
        );
    }

    #[test]
    fn url_rules() {
        let pats = p(&["api.example.com", "127.0.0.1"]);
        let check = |u: &str, lo| check_url(&url::Url::parse(u).unwrap(), &pats, lo);
        assert!(check("https://api.example.com/v1", false).is_ok());
        assert!(
            check("http://api.example.com/v1", false)
                .unwrap_err()
                .0
                .contains("https")
        );
        assert!(
            check("https://user:pw@api.example.com/", false)
                .unwrap_err()
                .0
                .contains("user info")
        );
        assert!(
            check("https://other.example.com/", false)
                .unwrap_err()
                .0
                .contains("egress list")
        );
        assert!(check("http://127.0.0.1:8080/", false).is_err());
        assert!(check("http://127.0.0.1:8080/", true).is_ok());
        assert!(check("file:///etc/passwd", true).is_err());
    }

    #[test]
    fn secret_endpoints_must_be_https_on_covered_hosts() {
        let hosts = p(&["api.example.com", "*.auth.example.com"]);
        let mut o = super::super::standard_oauth2();
        o.token_url = "https://{tenant}.auth.example.com/token".into();
        o.revoke_url = Some("https://api.example.com/revoke".into());
        assert_eq!(
            oauth_endpoints_covered(&o, &hosts, false),
            Ok(vec![
                "x.auth.example.com".to_string(),
                "api.example.com".to_string()
            ])
        );
        o.refresh_url = Some("https://collector.elsewhere.example/refresh".into());
        let problems = oauth_endpoints_covered(&o, &hosts, false).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "refresh_url");
        assert!(problems[0].1.contains("collector.elsewhere.example"));
        o.refresh_url = None;
        o.token_url = "http://api.example.com/token".into();
        let problems = oauth_endpoints_covered(&o, &hosts, false).unwrap_err();
        assert!(problems[0].1.contains("must be https"), "{problems:?}");
        assert!(
            oauth_endpoints_covered(&o, &hosts, true).is_ok(),
            "test mode"
        );
    }
}
