//! Failed sign-ins and failed bearer authentications, counted per client address: ten in a
//! minute block the address (IPv6 by its /64) until the minute has passed. The address is the
//! peer's, or, when the peer is one of `KEYPORT_TRUSTED_PROXIES`, the nearest address in
//! `X-Forwarded-For` that is not a trusted proxy (never a header from an untrusted peer, which
//! anyone can write).

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address a request is counted under: the peer, or behind trusted proxies the client they
/// forwarded for (`X-Forwarded-For`, read from the right, skipping trusted proxies).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// Failed sign-ins allowed per client address per minute.
const SIGN_IN_FAILURES: u32 = 10;

type FailureMap = std::sync::Mutex<std::collections::HashMap<IpAddr, (i64, u32)>>;

/// Failed sign-ins by client address: (window start, failures). A successful sign-in resets its
/// address; other addresses are not affected.
fn sign_in_failures() -> &'static FailureMap {
    static FAILURES: std::sync::OnceLock<FailureMap> = std::sync::OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

/// Addresses tracked at once; beyond that, new addresses share one budget.
const SIGN_IN_TRACKED: usize = 10_000;

/// The key an address is counted under: IPv6 by its /64 (one host can hold a whole /64), and
/// addresses beyond the table's capacity together under one key.
fn sign_in_key(map: &std::collections::HashMap<IpAddr, (i64, u32)>, ip: IpAddr) -> IpAddr {
    let key = match ip {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(seg))
        }
        v4 => v4,
    };
    if map.len() >= SIGN_IN_TRACKED && !map.contains_key(&key) {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        key
    }
}

pub(crate) fn sign_in_blocked(ip: IpAddr, now: i64) -> bool {
    let map = sign_in_failures().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&sign_in_key(&map, ip))
        .is_some_and(|(start, n)| now - start < 60_000 && *n >= SIGN_IN_FAILURES)
}

pub(crate) fn sign_in_failed(ip: IpAddr, now: i64) {
    let mut map = sign_in_failures().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= SIGN_IN_TRACKED {
        map.retain(|_, (start, _)| now - *start < 60_000);
    }
    let key = sign_in_key(&map, ip);
    let e = map.entry(key).or_insert((now, 0));
    if now - e.0 >= 60_000 {
        *e = (now, 0);
    }
    e.1 += 1;
}

pub(crate) fn sign_in_succeeded(ip: IpAddr) {
    let mut map = sign_in_failures().lock().unwrap_or_else(|p| p.into_inner());
    let key = sign_in_key(&map, ip);
    map.remove(&key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_block_only_their_address() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = 1_000_000;
        for _ in 0..SIGN_IN_FAILURES {
            assert!(!sign_in_blocked(a, now));
            sign_in_failed(a, now);
        }
        assert!(sign_in_blocked(a, now));
        assert!(!sign_in_blocked(b, now));
        assert!(!sign_in_blocked(a, now + 60_000), "the window passes");
        // One IPv6 host holds a /64: its addresses share one budget.
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        for i in 0..SIGN_IN_FAILURES {
            sign_in_failed(v6(&format!("2001:db8:1:2::{i:x}")), now);
        }
        assert!(sign_in_blocked(v6("2001:db8:1:2::ffff"), now));
        assert!(!sign_in_blocked(v6("2001:db8:1:3::1"), now));
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.9, 203.0.113.5, 10.0.0.7".parse().unwrap(),
        );
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // An untrusted peer: its header is ignored.
        assert_eq!(client_ip(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
        // A trusted peer: the nearest untrusted forwarded address (spoofed ones further left
        // are not believed).
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.5"));
        // Nothing usable forwarded: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }
}
