//! The dashboard's sign-in: a session, never the token. `POST /api/session` (with a bearer
//! token) answers a cookie holding a session id: `v1.<expiry>.<nonce>.<mac>`, where the nonce
//! is 16 random bytes and the MAC is HMAC-SHA-256 of the expiry and the nonce under a key
//! derived from the API token that signed in. So:
//!
//! - the cookie is worth nothing beyond this host's API (another service on the same name,
//!   which browsers send it to, learns no token), and nothing after its expiry
//!   (`--session-ttl`, 12 h by default; the cookie's `Max-Age` says the same);
//! - every host with the same tokens takes it (a cluster behind one name), and a token rotated
//!   out ends the sessions it opened;
//! - `DELETE /api/session` signs out: the browser's cookie is cleared, and the session is
//!   refused by this host until it would have expired (another host of a cluster takes it
//!   until then, were it copied before).
//!
//! Over HTTPS (a proxy in front says `X-Forwarded-Proto: https`) the cookie is
//! `__Host-http_spawn_session`, `Secure`: browsers then keep it to this origin and HTTPS. Over
//! plain HTTP it is `http_spawn_session`. Both are `HttpOnly; SameSite=Strict; Path=/`. A
//! request the cookie authenticates must come from the host's own origin (see `browser`), so
//! another service's page on the same name cannot use it either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::runtime::cache::hex;

/// The session cookie's name over plain HTTP.
pub(super) const COOKIE: &str = "http_spawn_session";
/// Its name over HTTPS: browsers keep a `__Host-` cookie to the origin that set it, `Secure`.
pub(super) const HOST_COOKIE: &str = "__Host-http_spawn_session";
/// The cookie earlier versions set, holding the token itself: cleared at sign-in and sign-out.
const LEGACY_COOKIE: &str = "http_spawn_token";

/// Sign-outs remembered at most (each until its session would have expired).
const MAX_REVOKED: usize = 100_000;

type HmacSha256 = Hmac<Sha256>;

/// Why a session cookie was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Invalid {
    /// Not one this host made with any of its tokens (or the token was rotated out).
    Unknown,
    /// Past its expiry, or signed out.
    Expired,
}

/// Sessions made and checked with keys derived from the API tokens.
pub(super) struct Sessions {
    /// One per API token.
    keys: Vec<[u8; 32]>,
    ttl: Duration,
    /// Nonces signed out, with their sessions' expiry.
    revoked: Mutex<HashMap<[u8; 16], u64>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("keys", &self.keys.len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Sessions {
    /// Sessions for the tokens whose SHA-256 digests are `digests`, lasting `ttl`.
    pub(super) fn new(digests: &[[u8; 32]], ttl: Duration) -> Self {
        let keys = digests
            .iter()
            .map(|digest| {
                let mut key = Sha256::new();
                key.update(b"http-spawn session key v1\0");
                key.update(digest);
                key.finalize().into()
            })
            .collect();
        Self {
            keys,
            ttl,
            revoked: Mutex::default(),
        }
    }

    fn mac(key: &[u8; 32], expiry: u64, nonce: &[u8; 16]) -> HmacSha256 {
        // A key of any length is accepted: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"v1.");
        mac.update(&expiry.to_be_bytes());
        mac.update(nonce);
        mac
    }

    /// A new session for the token at `index` of the digests: the cookie's value, or none when
    /// the system has no randomness to give.
    pub(super) fn open(&self, index: usize) -> Option<String> {
        let key = self.keys.get(index)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).ok()?;
        let expiry = now_secs().saturating_add(self.ttl.as_secs());
        let tag = Self::mac(key, expiry, &nonce).finalize().into_bytes();
        Some(format!("v1.{expiry}.{}.{}", hex(&nonce), hex(&tag)))
    }

    /// Whether `value` is a live session of this host's.
    pub(super) fn check(&self, value: &str) -> Result<(), Invalid> {
        let (expiry, nonce, tag) = parse(value).ok_or(Invalid::Unknown)?;
        // Every key is tried, whole: the time taken says nothing of which one matched.
        let matched = self.keys.iter().fold(false, |matched, key| {
            Self::mac(key, expiry, &nonce).verify_slice(&tag).is_ok() | matched
        });
        if !matched {
            return Err(Invalid::Unknown);
        }
        if expiry <= now_secs() || self.revoked().contains_key(&nonce) {
            return Err(Invalid::Expired);
        }
        Ok(())
    }

    /// Signs the session `value` out, if it is a live one.
    pub(super) fn close(&self, value: &str) {
        if self.check(value).is_err() {
            return;
        }
        let Some((expiry, nonce, _)) = parse(value) else {
            return;
        };
        let now = now_secs();
        let mut revoked = self.revoked();
        revoked.retain(|_, until| *until > now);
        if revoked.len() < MAX_REVOKED {
            revoked.insert(nonce, expiry);
        }
    }

    fn revoked(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], u64>> {
        self.revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `Set-Cookie` values of a sign-in with session `value`: the session cookie, and the
    /// legacy one cleared.
    pub(super) fn set_cookies(&self, value: &str, headers: &HeaderMap) -> Vec<HeaderValue> {
        let (name, secure) = cookie_for(headers);
        let max_age = self.ttl.as_secs();
        [
            format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"),
            format!("{LEGACY_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        ]
        .iter()
        .filter_map(|cookie| HeaderValue::from_str(cookie).ok())
        .collect()
    }
}

/// The `Set-Cookie` values that clear every sign-in cookie the host may have set.
pub(super) fn clear_cookies(headers: &HeaderMap) -> Vec<HeaderValue> {
    let (_, secure) = cookie_for(headers);
    let mut cookies = vec![
        format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        format!("{LEGACY_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    ];
    if !secure.is_empty() {
        cookies.push(format!(
            "{HOST_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        ));
    }
    cookies
        .iter()
        .filter_map(|cookie| HeaderValue::from_str(cookie).ok())
        .collect()
}

/// The cookie's name and its `Secure` attribute for a request: `__Host-` over HTTPS.
fn cookie_for(headers: &HeaderMap) -> (&'static str, &'static str) {
    if https(headers) {
        (HOST_COOKIE, "; Secure")
    } else {
        (COOKIE, "")
    }
}

/// Whether the request reached a proxy in front of the host over HTTPS, as the proxy says.
/// A client that says so over plain HTTP only gets a cookie its browser will not keep.
fn https(headers: &HeaderMap) -> bool {
    let says = |name: &str, check: fn(&str) -> bool| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(check)
    };
    says("x-forwarded-proto", |value| {
        value
            .split(',')
            .next()
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }) || says(header::FORWARDED.as_str(), |value| {
        value
            .split(',')
            .next()
            .into_iter()
            .flat_map(|element| element.split(';'))
            .any(|pair| {
                pair.trim().split_once('=').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("proto")
                        && value.trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
    })
}

/// The session cookie's value, if the request carries one (either name).
pub(super) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE || name == HOST_COOKIE).then_some(value)
        })
}

/// Whether the request carries the cookie of an earlier version, which held a token.
pub(super) fn legacy_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .any(|pair| pair.trim().starts_with(&format!("{LEGACY_COOKIE}=")))
}

/// `v1.<expiry>.<nonce>.<tag>`, read.
fn parse(value: &str) -> Option<(u64, [u8; 16], [u8; 32])> {
    let mut parts = value.split('.');
    if parts.next()? != "v1" {
        return None;
    }
    let expiry = parts.next()?.parse().ok()?;
    let nonce = unhex(parts.next()?)?;
    let tag = unhex(parts.next()?)?;
    parts.next().is_none().then_some((expiry, nonce, tag))
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(ttl: Duration) -> Sessions {
        Sessions::new(&[[1; 32], [2; 32]], ttl)
    }

    #[test]
    fn a_session_is_taken_until_it_expires_or_is_closed() {
        let sessions = sessions(Duration::from_secs(3600));
        let value = sessions.open(1).expect("randomness");
        assert_eq!(sessions.check(&value), Ok(()));
        let other = sessions.open(1).expect("randomness");
        assert_ne!(value, other, "each session is its own");
        sessions.close(&value);
        assert_eq!(sessions.check(&value), Err(Invalid::Expired));
        assert_eq!(sessions.check(&other), Ok(()));

        let expired = Sessions::new(&[[1; 32]], Duration::ZERO);
        let value = expired.open(0).expect("randomness");
        assert_eq!(expired.check(&value), Err(Invalid::Expired));
    }

    #[test]
    fn a_forged_or_foreign_session_is_unknown() {
        let sessions = sessions(Duration::from_secs(3600));
        let value = sessions.open(0).expect("randomness");
        // Another host with other tokens: unknown here.
        let foreign = Sessions::new(&[[3; 32]], Duration::from_secs(3600));
        assert_eq!(foreign.check(&value), Err(Invalid::Unknown));
        // A later expiry with the same tag: the tag no longer matches.
        let (expiry, rest) = value["v1.".len()..].split_once('.').expect("parts");
        let later = format!("v1.{}.{rest}", expiry.parse::<u64>().expect("expiry") + 1);
        assert_eq!(sessions.check(&later), Err(Invalid::Unknown));
        for junk in ["", "v1", "v2.1.00.00", "v1.x.y.z", "0123456789abcdef"] {
            assert_eq!(sessions.check(junk), Err(Invalid::Unknown), "{junk:?}");
        }
    }

    #[test]
    fn the_cookie_is_host_bound_over_https() {
        let sessions = sessions(Duration::from_secs(60));
        let plain = sessions.set_cookies("v", &HeaderMap::new());
        assert_eq!(
            plain[0],
            "http_spawn_session=v; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        );
        assert!(
            plain[1]
                .to_str()
                .expect("ASCII")
                .starts_with("http_spawn_token=;")
        );
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let secure = sessions.set_cookies("v", &proxied);
        assert_eq!(
            secure[0],
            "__Host-http_spawn_session=v; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure"
        );
        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=10.0.0.1;proto=https;host=spawn.example"),
        );
        assert!(https(&forwarded));
    }
}
