//! What keeps the browser of the host's user from being turned against it. A web page the user
//! visits may send requests to 127.0.0.1: after pointing its own name there (DNS rebinding), it
//! can read what it sends, and with a plain form post it can write blind. It may also frame the
//! dashboard.
//!
//! - **`Host`.** A host without API tokens answers only requests whose `Host` is a loopback
//!   name (`localhost` and its subdomains, `127.0.0.0/8`, `[::1]`) or a name it was given
//!   (the address it listens on, `--advertise-address`): anything else is `421`. A page that
//!   rebinds its own name sends that name. With tokens, the token guards every request (a page
//!   cannot read it); with `--insecure-no-auth` the host is open on purpose.
//! - **Cross-site writes.** A `POST`, `PUT`, `PATCH` or `DELETE` whose `Sec-Fetch-Site` says
//!   `cross-site`, or whose `Origin` is not the host's own (`null` included), is `403`. Browsers
//!   send these headers; API clients do not, and are never refused for them.
//! - **Every answer** says `X-Content-Type-Options: nosniff`; the dashboard's page (and its
//!   sign-in page) also `Content-Security-Policy: frame-ancestors 'none'` and
//!   `X-Frame-Options: DENY`, so no other page frames it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;

use super::error::ApiError;
use crate::config::Config;

/// Which `Host` values a host serves.
#[derive(Debug, Clone)]
pub struct BrowserPolicy {
    /// `None`: any (the host has API tokens, or runs with `--insecure-no-auth`); else the
    /// names it serves beside the loopback ones, lowercased, without a port.
    hosts: Option<Arc<[String]>>,
}

impl BrowserPolicy {
    /// The policy `config` sets.
    pub fn from_config(config: &Config) -> Self {
        if !config.api_tokens.is_empty() || config.insecure_no_auth {
            return Self::any();
        }
        let mut hosts = vec![config.listen.ip().to_string()];
        hosts.extend(name_of(&config.advertised_address()).map(str::to_owned));
        Self::serving(&hosts)
    }

    /// A policy that serves loopback names and `hosts`.
    pub fn serving(hosts: &[String]) -> Self {
        let hosts: Vec<String> = hosts.iter().map(|host| host.to_ascii_lowercase()).collect();
        Self {
            hosts: Some(hosts.into()),
        }
    }

    /// A policy that serves any `Host`.
    pub fn any() -> Self {
        Self { hosts: None }
    }

    /// Whether a request naming `authority` (a `Host` header) is served.
    fn serves(&self, authority: &str) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let Some(name) = name_of(authority) else {
            return false;
        };
        loopback(name) || hosts.iter().any(|host| host.eq_ignore_ascii_case(name))
    }
}

/// The host name of an authority (`name`, `name:port`, `[v6]:port`), without its port; none
/// for one that is not well-formed. Names compare without regard to ASCII case.
fn name_of(authority: &str) -> Option<&str> {
    let authority = authority.trim();
    let name = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        v6
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => authority,
        }
    };
    (!name.is_empty()).then_some(name)
}

/// Whether `name` always means this machine: `localhost` (and its subdomains, which RFC 6761
/// keeps from resolving anywhere else), or a loopback address.
fn loopback(name: &str) -> bool {
    const SUFFIX: &str = ".localhost";
    name.eq_ignore_ascii_case("localhost")
        || name.len() > SUFFIX.len()
            && name.is_char_boundary(name.len() - SUFFIX.len())
            && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The request's authority: its `Host` header, or the URI's (HTTP/2).
fn authority(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.as_str())
        })
}

/// Whether a write comes from another site's page, by what the browser says of it.
fn cross_site(headers: &HeaderMap, own: Option<&str>) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    // `scheme://authority`; an opaque origin (a sandboxed frame, a file) is `null`.
    let Some((_, origin)) = origin.split_once("://") else {
        return true;
    };
    !own.is_some_and(|own| origin.eq_ignore_ascii_case(own))
}

/// Whether a request comes from a page of another origin than the host's, by what the browser
/// says of it: its `Origin`, or a `Sec-Fetch-Site` other than `same-origin` (or `none`, what
/// the user typed). A navigation (`Sec-Fetch-Mode: navigate`) is a page being opened, whose
/// answer goes to no other page, and counts as the host's own. What the sign-in cookie alone
/// authenticates must not be foreign: browsers send the cookie with requests from any origin
/// of the same site, another service on the same name among them.
pub(super) fn foreign(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"navigate"))
    {
        return cross_site(headers, own_authority(headers));
    }
    if headers.get("sec-fetch-site").is_some_and(|site| {
        !(site.as_bytes().eq_ignore_ascii_case(b"same-origin")
            || site.as_bytes().eq_ignore_ascii_case(b"none"))
    }) {
        return true;
    }
    headers.contains_key(header::ORIGIN) && cross_site(headers, own_authority(headers))
}

fn own_authority(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
}

/// The refusal of a request the policy does not serve, if it is one: called by the API's one
/// middleware before anything else.
pub(super) fn refusal(policy: &BrowserPolicy, request: &Request) -> Option<ApiError> {
    let own = authority(request);
    if !own.is_some_and(|own| policy.serves(own)) {
        return Some(ApiError::MisdirectedRequest(format!(
            "this host does not serve the name {:?}: without API tokens it answers only to \
             loopback names (localhost, 127.0.0.1, [::1]) and to --advertise-address",
            own.unwrap_or_default()
        )));
    }
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if writes && cross_site(request.headers(), own) {
        return Some(ApiError::Forbidden(
            "a cross-site request may not change anything here: the request's Origin (or \
             Sec-Fetch-Site) is another site's"
                .into(),
        ));
    }
    None
}

/// Marks every answer: no browser sniffs it for another type than it says.
pub(super) fn mark(response: &mut Response) {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// What the dashboard's pages add to their answer: no other page may frame them.
pub(super) const PAGE_HEADERS: [(header::HeaderName, &str); 2] = [
    (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_own_origin_is_not_foreign() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            for (name, value) in pairs {
                map.insert(
                    header::HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                    HeaderValue::from_str(value).expect("a value"),
                );
            }
            map
        };
        for own in [
            headers(&[]),
            headers(&[("origin", "http://127.0.0.1:8080")]),
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
            headers(&[
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "navigate"),
            ]),
        ] {
            assert!(!foreign(&own), "{own:?}");
        }
        for other in [
            headers(&[("origin", "http://127.0.0.1:3000")]),
            headers(&[("origin", "null")]),
            headers(&[("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors")]),
            headers(&[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ]),
        ] {
            assert!(foreign(&other), "{other:?}");
        }
    }

    #[test]
    fn loopback_and_given_names_are_served_others_not() {
        let policy = BrowserPolicy::serving(&["tasks.internal".into(), "10.0.0.7".into()]);
        for served in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:8080",
            "app.localhost:80",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
            "tasks.internal:8080",
            "10.0.0.7",
        ] {
            assert!(policy.serves(served), "{served}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.8",
            "[::2]:80",
            "",
            "localhost:80x",
            "[::1]x",
        ] {
            assert!(!policy.serves(refused), "{refused}");
        }
        assert!(BrowserPolicy::any().serves("evil.example"));
    }

    #[test]
    fn a_write_from_another_origin_is_cross_site() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    header::HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                    HeaderValue::from_str(value).expect("a value"),
                );
            }
            map
        };
        let own = Some("127.0.0.1:8080");
        assert!(!cross_site(&headers(&[]), own), "an API client");
        assert!(!cross_site(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            own
        ));
        assert!(!cross_site(
            &headers(&[("sec-fetch-site", "same-origin")]),
            own
        ));
        assert!(cross_site(
            &headers(&[("origin", "http://evil.example")]),
            own
        ));
        assert!(cross_site(&headers(&[("origin", "null")]), own));
        assert!(cross_site(
            &headers(&[("origin", "http://127.0.0.1:9090")]),
            own
        ));
        assert!(cross_site(
            &headers(&[("sec-fetch-site", "cross-site")]),
            own
        ));
    }
}
