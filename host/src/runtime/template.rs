//! Placeholders in a connector's URLs, authorize parameters and API headers.
//!
//! | form | meaning |
//! |---|---|
//! | `{name}` | the connection's config field `name`, else the token-response field `name` (`token-metadata`), else a value the host supplies (`client_id` in API headers) |
//! | `{a\|b}` | `a`, or `b` when `a` is empty or unset (any number of alternatives) |
//! | `'text'` | a literal alternative: `{login_host\|'login.salesforce.com'}`, `{hint\|''}` |
//!
//! What a value may contain depends on where the placeholder stands, so a value never changes a
//! URL's structure:
//!
//! | slot | where | a value is |
//! |---|---|---|
//! | origin | opening a URL: `{instance_url}/services/data` | an `https://host[:port]` origin (no user info, path or query) |
//! | host | inside the authority: `api.{region}.example.com`, `https://{hostname}/` | host labels (`A-Z a-z 0-9 . -`); a placeholder that is the whole authority may add `:port` |
//! | path | elsewhere in a URL | `A-Z a-z 0-9 . _ -` |
//! | parameter | an authorize/token parameter value (encoded when sent) | any text without control characters |
//! | header | an API header value | any text without control characters |
//!
//! In URL slots an empty result is an error naming the field to set; a parameter or header that
//! fills to empty is left out by its caller.

use serde_json::Value;

/// Where a template is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A URL: slots are origin, host or path by position.
    Url,
    /// A parameter value, encoded when sent.
    Param,
    /// An HTTP header value.
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Origin,
    Host { whole_authority: bool },
    Path,
    Text,
}

/// One `{…}` of a template: its alternatives and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Field names and `'literals'` (quotes kept), in order.
    pub alternatives: Vec<String>,
    /// Start (the `{`) and end (after the `}`) in the template.
    pub span: (usize, usize),
}

impl Placeholder {
    /// The field names among the alternatives.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.alternatives
            .iter()
            .filter(|a| !a.starts_with('\''))
            .map(String::as_str)
    }
}

/// The placeholders of a template, or why its syntax is wrong.
pub fn parse(template: &str) -> Result<Vec<Placeholder>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'}' => return Err(format!("{template:?} has a '}}' without its '{{'")),
            b'{' => {
                let end = template[i..]
                    .find('}')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("{template:?} has an unclosed {{placeholder}}"))?;
                let inner = &template[i + 1..end];
                if inner.contains('{') {
                    return Err(format!("{template:?} nests a '{{' inside a placeholder"));
                }
                let mut alternatives = Vec::new();
                for alt in inner.split('|') {
                    let ok = if let Some(lit) =
                        alt.strip_prefix('\'').and_then(|a| a.strip_suffix('\''))
                    {
                        alt.len() >= 2 && !lit.contains('\'')
                    } else {
                        !alt.is_empty()
                            && alt
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    };
                    if !ok {
                        return Err(format!(
                            "{{{inner}}} in {template:?}: each alternative is a field name (letters, digits, '_', '-') or a 'quoted literal'"
                        ));
                    }
                    alternatives.push(alt.to_string());
                }
                out.push(Placeholder {
                    alternatives,
                    span: (i, end + 1),
                });
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// The slot of a placeholder at `span` in a URL template.
fn url_slot(template: &str, span: (usize, usize)) -> Slot {
    if span.0 == 0 {
        return Slot::Origin;
    }
    let Some(scheme_end) = template.find("://") else {
        return Slot::Path;
    };
    let authority_start = scheme_end + 3;
    let authority_end = template[authority_start..]
        .find(['/', '?', '#'])
        .map(|e| authority_start + e)
        .unwrap_or(template.len());
    if span.0 >= authority_start && span.1 <= authority_end {
        Slot::Host {
            whole_authority: span.0 == authority_start && span.1 == authority_end,
        }
    } else {
        Slot::Path
    }
}

/// Whether a URL template's host (or its whole origin) comes from a placeholder.
pub fn host_is_templated(template: &str) -> bool {
    parse(template)
        .unwrap_or_default()
        .iter()
        .any(|p| url_slot(template, p.span) != Slot::Path)
}

/// A template filled with sample values of the right shape, to check its syntax.
pub fn sample(template: &str) -> String {
    let Ok(found) = parse(template) else {
        return template.to_string();
    };
    let mut out = String::new();
    let mut last = 0;
    for p in &found {
        out.push_str(&template[last..p.span.0]);
        out.push_str(match url_slot(template, p.span) {
            Slot::Origin => "https://x",
            _ => "x",
        });
        last = p.span.1;
    }
    out.push_str(&template[last..]);
    out
}

/// An egress pattern (`{hostname}`, `api.{region}.example.com`) with sample labels, to check it
/// is a host pattern.
pub fn sample_host(pattern: &str) -> String {
    let url = sample(&format!("https://{pattern}/"));
    url.strip_prefix("https://")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or(&url)
        .to_string()
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Values for placeholders: the connection's config, then its token-response fields, then
/// values the host supplies.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The effective config (an object).
    pub config: &'a Value,
    /// The token-response fields kept with the connection (an object).
    pub metadata: &'a Value,
    /// Host-supplied values (`client_id`, the credential inside a header).
    pub extra: &'a [(&'a str, &'a str)],
}

impl<'a> Vars<'a> {
    /// Config values only.
    pub fn config(config: &'a Value) -> Self {
        Vars {
            config,
            metadata: &Value::Null,
            extra: &[],
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        [self.config.get(name), self.metadata.get(name)]
            .into_iter()
            .flatten()
            .filter_map(value_text)
            .find(|s| !s.is_empty())
            .or_else(|| {
                self.extra
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
                    .filter(|s| !s.is_empty())
            })
    }
}

fn check(slot: Slot, name: &str, value: &str) -> Result<String, String> {
    let label = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    match slot {
        Slot::Origin => {
            let u = url::Url::parse(value).map_err(|_| {
                format!("{name} must be a URL such as https://host (it opens the provider's URLs)")
            })?;
            let bare = u.username().is_empty()
                && u.password().is_none()
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
                && u.fragment().is_none();
            if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() || !bare {
                return Err(format!(
                    "{name} must be an origin such as https://host, without a path, query or user info"
                ));
            }
            Ok(u.origin().ascii_serialization())
        }
        Slot::Host { whole_authority } => {
            let (host, port) = match value.rsplit_once(':') {
                Some((h, p)) if whole_authority => (h, Some(p)),
                _ => (value, None),
            };
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(label)
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            let port_ok = port.is_none_or(|p| {
                !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
            });
            if !host_ok || !port_ok {
                return Err(format!(
                    "{name} must be a host name such as example.com (letters, digits, '-' and '.'){}",
                    if whole_authority {
                        ", optionally with :port"
                    } else {
                        ""
                    }
                ));
            }
            Ok(value.to_ascii_lowercase())
        }
        Slot::Path => {
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!(
                    "{name} may only contain letters, digits, '.', '_' and '-'"
                ));
            }
            Ok(value.to_string())
        }
        Slot::Text => {
            if value.chars().any(char::is_control) {
                return Err(format!("{name} may not contain control characters"));
            }
            Ok(value.to_string())
        }
    }
}

/// Fills a template. Errors name the field to set and never contain a value.
pub fn fill(template: &str, vars: &Vars<'_>, used_as: Use) -> Result<String, String> {
    let found = parse(template)?;
    let mut out = String::new();
    let mut last = 0;
    for p in &found {
        out.push_str(&template[last..p.span.0]);
        last = p.span.1;
        let slot = match used_as {
            Use::Url => url_slot(template, p.span),
            Use::Param | Use::Header => Slot::Text,
        };
        let mut value = None;
        let mut chosen = "";
        for alt in &p.alternatives {
            if let Some(lit) = alt.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')) {
                value = Some(lit.to_string());
                chosen = alt;
                break;
            }
            if let Some(v) = vars.get(alt) {
                value = Some(v);
                chosen = alt;
                break;
            }
        }
        let fields: Vec<&str> = p.fields().collect();
        let value = value.unwrap_or_default();
        if value.is_empty() {
            if slot == Slot::Text {
                continue;
            }
            return Err(match fields.as_slice() {
                [one] => format!(
                    "the config field {one:?} is required (it is part of the provider's URLs)"
                ),
                many => format!(
                    "one of the config fields {} is required (they are part of the provider's URLs)",
                    many.iter()
                        .map(|f| format!("{f:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let name = if chosen.starts_with('\'') {
            format!("the default in {template:?}")
        } else {
            format!("the field {chosen:?}")
        };
        out.push_str(&check(slot, &name, &value)?);
    }
    out.push_str(&template[last..]);
    Ok(out)
}

/// The host (without port) a filled egress pattern stands for, or why it cannot be used.
pub fn egress_host(pattern: &str, vars: &Vars<'_>) -> Result<String, String> {
    // An egress pattern is a bare authority: fill it as the host of a URL.
    let url = fill(&format!("https://{pattern}/"), vars, Use::Url)?;
    url::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| format!("the egress host {pattern:?} does not fill to a host name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars<'a>(config: &'a Value, metadata: &'a Value) -> Vars<'a> {
        Vars {
            config,
            metadata,
            extra: &[("client_id", "app-1")],
        }
    }

    #[test]
    fn slots_follow_position() {
        let c = json!({"hostname": "gitlab.example.com:8443", "region": "eu", "ext": "com.au", "sub": "acme"});
        let m = json!({"instance_url": "https://na1.my.salesforce.com/"});
        let v = vars(&c, &m);
        assert_eq!(
            fill("https://{hostname}/api/v4/", &v, Use::Url).unwrap(),
            "https://gitlab.example.com:8443/api/v4/"
        );
        assert_eq!(
            fill("https://api.{region}.example.com/{sub}/x", &v, Use::Url).unwrap(),
            "https://api.eu.example.com/acme/x"
        );
        assert_eq!(
            fill("https://www.zohoapis.{ext}/crm/v6/", &v, Use::Url).unwrap(),
            "https://www.zohoapis.com.au/crm/v6/"
        );
        assert_eq!(
            fill("{instance_url}/services/data/v61.0/", &v, Use::Url).unwrap(),
            "https://na1.my.salesforce.com/services/data/v61.0/"
        );
        assert_eq!(
            fill("{client_id}", &v, Use::Header).unwrap(),
            "app-1",
            "host-supplied values come last"
        );
    }

    #[test]
    fn values_cannot_change_a_urls_structure() {
        for (template, value) in [
            ("https://{x}.example.com/", "evil.com/"),
            ("https://{x}.example.com/", "a@b"),
            ("https://api.{x}.example.com/", "eu:443"),
            ("https://{x}/", "host:port"),
            ("https://{x}/", "a..b"),
            ("https://{x}/", "-a.com"),
            ("https://example.com/{x}", "a/b"),
            ("https://example.com/?q={x}", "a&b=c"),
            ("{x}/api", "https://host/path"),
            ("{x}/api", "https://user@host"),
            ("{x}/api", "javascript:alert(1)"),
            ("{x}/api", "host.example.com"),
        ] {
            let c = json!({ "x": value });
            let r = fill(template, &Vars::config(&c), Use::Url);
            assert!(r.is_err(), "{template} with {value:?} gave {r:?}");
            assert!(
                !r.unwrap_err().contains(value),
                "errors never echo the value"
            );
        }
        let c = json!({"x": "a\r\nSet-Cookie: y"});
        assert!(fill("Bearer {x}", &Vars::config(&c), Use::Header).is_err());
    }

    #[test]
    fn fallbacks_and_literals() {
        let c = json!({"login_host": "", "b": "second"});
        let v = Vars::config(&c);
        assert_eq!(
            fill(
                "https://{login_host|'login.salesforce.com'}/x",
                &v,
                Use::Url
            )
            .unwrap(),
            "https://login.salesforce.com/x",
            "an empty field falls back"
        );
        assert_eq!(fill("{a|b}", &v, Use::Param).unwrap(), "second");
        assert_eq!(fill("{hint|''}", &v, Use::Param).unwrap(), "");
        assert_eq!(
            fill("{hint}", &v, Use::Param).unwrap(),
            "",
            "a parameter may fill to empty (its caller leaves it out)"
        );
        let c = json!({"login_host": "test.salesforce.com"});
        assert_eq!(
            fill(
                "https://{login_host|'login.salesforce.com'}/x",
                &Vars::config(&c),
                Use::Url
            )
            .unwrap(),
            "https://test.salesforce.com/x"
        );
        let err = fill(
            "https://{a|b}.example.com/",
            &Vars::config(&json!({})),
            Use::Url,
        )
        .unwrap_err();
        assert!(err.contains("\"a\", \"b\""), "{err}");
        let err = fill(
            "https://{a}.example.com/",
            &Vars::config(&json!({})),
            Use::Url,
        )
        .unwrap_err();
        assert!(err.contains("\"a\" is required"), "{err}");
    }

    #[test]
    fn syntax_errors_and_samples() {
        for bad in ["{a", "a}", "{a{b}}", "{}", "{a|}", "{'a}", "{a b}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            sample("{instance_url}/services/{v}"),
            "https://x/services/x"
        );
        assert_eq!(
            sample("https://{s}.example.com/{x|'y'}"),
            "https://x.example.com/x"
        );
        assert_eq!(sample_host("{hostname}"), "x");
        assert_eq!(
            sample_host("api.{region|'eu'}.example.com"),
            "api.x.example.com"
        );
        assert_eq!(
            egress_host(
                "{hostname}",
                &Vars::config(&json!({"hostname": "Git.Example.com:8443"}))
            )
            .unwrap(),
            "git.example.com"
        );
        assert_eq!(
            egress_host("www.zohoapis.{ext|'com'}", &Vars::config(&json!({}))).unwrap(),
            "www.zohoapis.com"
        );
    }
}
