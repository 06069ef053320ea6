//! The API's settings.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use exim_pilot_store::Role;

use crate::auth::AuthConfig;

/// A network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// True when `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let bad = || format!("{s:?} is not an IP address or network (like 10.0.0.0/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }
}

/// How the API behaves.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Tokens, sessions and login limits.
    pub auth: AuthConfig,
    /// The token signing secret; without one, a generated key kept in the
    /// store is used.
    pub jwt_secret: Option<Vec<u8>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Network>,
    /// Largest request body accepted, in bytes (default 256 KiB).
    pub max_body_bytes: usize,
    /// Most operations in one batched request (default 10).
    pub max_batch: usize,
    /// Most mutation fields (aliases included) in one request, over all
    /// of its operations (default 20).
    pub max_mutations: usize,
    /// Serve GraphiQL at `GET /graphql` (default on).
    pub graphiql: bool,
    /// Answer introspection queries (default on).
    pub introspection: bool,
    /// Longest time a request may run (default 15 s).
    pub request_timeout: Duration,
    /// How long a WebSocket may take to send `connection_init` (default
    /// 10 s).
    pub ws_init_timeout: Duration,
    /// How often a WebSocket's token is checked again: a revoked session
    /// or disabled user closes it, changed rights end its operations
    /// (default 5 s; see `ws`).
    pub ws_recheck: Duration,
    /// Most operations (subscriptions, or queries sent over the socket)
    /// one WebSocket may run at once (default 20); one more is refused
    /// with an `error` of code `TOO_MANY_SUBSCRIPTIONS`.
    pub ws_max_subscriptions: usize,
    /// Most operations one user may run at once over all their
    /// WebSockets of this process (default 100); refused the same way.
    pub ws_max_user_subscriptions: usize,
    /// The roles that may read a queued message's headers and body
    /// (default operator and admin): message content, which every view
    /// of is audited.
    pub queue_view_roles: Vec<Role>,
    /// The roles that may read a queued message's own log (`exim -Mvl`;
    /// default every role: it holds what the logs hold, which viewers
    /// read already). Audited too.
    pub queue_log_roles: Vec<Role>,
    /// How long a queue job stays valid: a node that gets it later does
    /// not run it (default 10 minutes).
    pub queue_job_ttl: Duration,
    /// The most messages one queue job may act on (default 10,000).
    pub queue_max_ids: usize,
    /// How often the `queueJobResults` subscription looks for new results
    /// in the store (default 1 s).
    pub queue_results_poll: Duration,
    /// Rows one CSV export may hold at most; a longer one is cut off
    /// there with an aborted transfer, never silently short (see
    /// `export`). Default 1,000,000.
    pub export_max_rows: usize,
    /// Origins (`https://console.example.com`) whose pages may call
    /// `POST /graphql` and `POST /export.csv` from a browser (CORS), with
    /// an `Authorization` and a `Content-Type` header and without
    /// cookies. None by default: other origins get no CORS headers at
    /// all, so browsers keep their pages out (see `cors`).
    pub cors_origins: Vec<String>,
    /// The certificate chain and private key to serve HTTPS with;
    /// plain HTTP without (see `tls`).
    pub tls: Option<TlsFiles>,
    /// Longest time a client may take to send a request's headers, and
    /// then its body (default 15 s); see `server`.
    pub read_timeout: Duration,
    /// Longest time writing to a client may stay stalled (default 15 s).
    pub write_timeout: Duration,
    /// Longest time a kept-alive connection may wait for its next
    /// request (default 60 s).
    pub idle_timeout: Duration,
    /// Show viewers addresses with their local parts masked (see
    /// `mask`); operators and admins still see them whole. Off by
    /// default.
    pub mask_viewer_addresses: bool,
}

/// Where the HTTPS certificate and key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            auth: AuthConfig::default(),
            jwt_secret: None,
            trusted_proxies: Vec::new(),
            max_body_bytes: 256 * 1024,
            max_batch: 10,
            max_mutations: 20,
            graphiql: true,
            introspection: true,
            request_timeout: Duration::from_secs(15),
            ws_init_timeout: Duration::from_secs(10),
            ws_recheck: Duration::from_secs(5),
            ws_max_subscriptions: 20,
            ws_max_user_subscriptions: 100,
            queue_view_roles: vec![Role::Operator, Role::Admin],
            queue_log_roles: vec![Role::Viewer, Role::Operator, Role::Admin],
            queue_job_ttl: Duration::from_secs(10 * 60),
            queue_max_ids: 10_000,
            queue_results_poll: Duration::from_secs(1),
            export_max_rows: 1_000_000,
            cors_origins: Vec::new(),
            tls: None,
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            mask_viewer_addresses: false,
        }
    }
}

impl ApiConfig {
    /// The client's address: the peer's, unless the peer is a trusted
    /// proxy, in which case the nearest address of `X-Forwarded-For` that
    /// is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let config = ApiConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
            ..ApiConfig::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = Some("198.51.100.9, 203.0.113.5, 10.1.2.3");
        assert_eq!(config.client_ip(ip("192.0.2.1"), xff), ip("192.0.2.1"));
        assert_eq!(config.client_ip(ip("10.9.9.9"), xff), ip("203.0.113.5"));
        assert_eq!(config.client_ip(ip("::1"), None), ip("::1"));
        assert_eq!(
            config.client_ip(ip("10.9.9.9"), Some("junk")),
            ip("10.9.9.9")
        );
        assert!("10.0.0.0/33".parse::<Network>().is_err());
    }
}
