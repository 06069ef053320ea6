//! Cross-origin requests (CORS) to `/graphql` and `/export.csv`.
//!
//! Nothing is allowed unless configured: a request from an origin not on
//! the list gets no CORS header at all, so the browser keeps its page
//! from reading the answer, and a preflight from it goes on to the
//! routes, which do not answer `OPTIONS`. An origin on the list
//! (compared whole: scheme, host and port) may send `GET` and `POST`
//! with `Authorization` and `Content-Type` headers, and read the answer;
//! a preflight is answered here, allowing those and nothing more, for
//! ten minutes. Credentials (cookies, TLS client certificates) are never
//! allowed: the API's tokens travel in the `Authorization` header, which
//! a page sets itself.
//!
//! A small middleware rather than a general CORS layer, so that unknown
//! origins provably get none of its headers, preflights included.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Why an origin cannot be allowed.
#[derive(Debug, thiserror::Error)]
#[error("cannot allow {origin:?} cross-origin requests: {problem}")]
pub struct CorsError {
    /// The origin as given.
    pub origin: String,
    /// What is wrong, and how to write it.
    pub problem: String,
}

/// The origins allowed.
#[derive(Clone, Debug, Default)]
pub struct Origins(Vec<String>);

impl Origins {
    /// Checks and keeps `origins`: each `http://` or `https://`, a host
    /// and maybe a port, nothing else.
    pub fn parse(origins: &[String]) -> Result<Origins, CorsError> {
        let checked = origins
            .iter()
            .map(|o| {
                check(o).map_err(|problem| CorsError {
                    origin: o.clone(),
                    problem,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Origins(checked))
    }

    /// True when no origin is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `origin` (a request's `Origin` header) is allowed.
    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// The origin in the form browsers send it, or what is wrong with it.
fn check(origin: &str) -> Result<String, String> {
    if origin.contains('*') {
        return Err("wildcards are not allowed: list each origin".into());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!(
            "give the scheme, as browsers send it: https://{origin}"
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https".into());
    }
    if rest.contains(['/', '?', '#']) {
        let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        return Err(format!("an origin has no path: give {scheme}://{host}"));
    }
    if rest.contains('@') {
        return Err("an origin has no user name".into());
    }
    let (host, port) = split_port(rest)?;
    if host.is_empty() || !host_chars(host) {
        return Err("the host is not a host name or IP address".into());
    }
    let default = if scheme == "https" { 443 } else { 80 };
    match port {
        Some(p) if p == default => Err(format!(
            "browsers leave the default port out: give {scheme}://{host}"
        )),
        Some(p) => Ok(format!("{scheme}://{}:{p}", host.to_ascii_lowercase())),
        None => Ok(format!("{scheme}://{}", host.to_ascii_lowercase())),
    }
}

/// The host and port of `host[:port]` (IPv6 in brackets).
fn split_port(rest: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{p:?} is not a port")),
        })
        .transpose()?;
    Ok((host, port))
}

/// Whether `host` is made of a host name's or an address's characters.
fn host_chars(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    host.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Middleware: answers the preflights of allowed origins and adds the
/// CORS headers to their requests' answers.
pub async fn cors(State(origins): State<Arc<Origins>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(ORIGIN)
        .filter(|o| origins.allows(o))
        .cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        preflight_answer()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(VARY, HeaderValue::from_static("origin"));
    if !preflight {
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("content-disposition"),
        );
    }
    response
}

/// The answer to an allowed origin's preflight.
fn preflight_answer() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"),
            (ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type"),
            (ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_written_as_browsers_send_them() {
        let ok = |o: &str| check(o).unwrap();
        assert_eq!(
            ok("https://Console.Example.com"),
            "https://console.example.com"
        );
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://[::1]:3000"), "http://[::1]:3000");
        let bad = |o: &str| check(o).unwrap_err();
        assert!(bad("*").contains("wildcards"));
        assert!(bad("https://*.example.com").contains("wildcards"));
        assert!(bad("console.example.com").contains("https://console.example.com"));
        assert!(bad("https://console.example.com/").contains("no path"));
        assert!(bad("https://console.example.com:443").contains("default port"));
        assert!(bad("ftp://example.com").contains("http or https"));
        assert!(bad("https://example.com:99999").contains("not a port"));
        assert!(bad("https://exa mple.com").contains("host"));
        assert!(bad("https://").contains("host"));
    }
}
