//! `[server]`: the listener and the request path's limits and timeouts.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Requests with a larger body are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
    /// Deadline of a whole request unless its route sets one.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// How long a client may take to send its request body (408 after that), so a
    /// client trickling bytes cannot hold a request open forever.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// The environment variable holding the admin token (`/admin/*`, `/v1/requests`).
    /// Unset: the admin API is open while the gateway is (no keys, loopback), and closed
    /// once client keys exist.
    pub admin_token_env: Option<String>,
    /// How long a connection may wait for a request's headers to be complete: from the
    /// moment it is open, and between requests on a kept-alive connection. Bounds
    /// clients that trickle headers (slowloris) and idle keep-alive sockets alike.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Most client connections open at once; past it, new connections wait in the
    /// kernel's backlog. 0: derived from the open-file limit (raised to its hard limit at
    /// start), keeping room for upstream connections and the store.
    #[serde(default)]
    pub max_connections: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while the gateway still serves,
    /// before it stops accepting connections: time for a load balancer to notice.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_ms: u64,
    /// Host names, besides loopback ones (`localhost`, `*.localhost`, `127.0.0.0/8`,
    /// `::1`), that a request's `Host` and `Origin` may name while client calls need no
    /// key: a name in `/etc/hosts` for this machine, say. Everything else is refused then
    /// (403 `host_not_allowed` / `origin_not_allowed`), so a web page cannot call an
    /// open gateway from the browser, directly or by rebinding its own DNS name to
    /// 127.0.0.1.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            shutdown_timeout_ms: default_shutdown_timeout(),
            request_timeout_ms: default_request_timeout(),
            body_timeout_ms: default_body_timeout(),
            admin_token_env: None,
            idle_timeout_ms: default_idle_timeout(),
            max_connections: 0,
            shutdown_grace_ms: default_shutdown_grace(),
            allowed_hosts: Vec::new(),
        }
    }
}

pub(crate) fn default_idle_timeout() -> u64 {
    30_000
}
pub(crate) fn default_shutdown_grace() -> u64 {
    1_000
}
pub(crate) fn default_max_response_bytes() -> usize {
    32 << 20
}
pub(crate) fn default_max_event_bytes() -> usize {
    1 << 20
}

pub(crate) fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
pub(crate) fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
pub(crate) fn default_shutdown_timeout() -> u64 {
    30_000
}
pub(crate) fn default_request_timeout() -> u64 {
    600_000
}
pub(crate) fn default_body_timeout() -> u64 {
    30_000
}
pub(crate) fn default_connect_timeout() -> u64 {
    5_000
}

impl ServerConfig {
    /// What the types cannot check, as (key path, message) pairs.
    pub(super) fn validate(&self, out: &mut Problems) {
        let k = key;
        if self.listen.parse::<SocketAddr>().is_err() {
            out.push((
                k(&["server", "listen"]),
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:8080",
                    self.listen
                ),
            ));
        }
        if self.max_body_bytes == 0 {
            out.push((
                k(&["server", "max_body_bytes"]),
                "must be greater than 0".into(),
            ));
        }
        if self.body_timeout_ms == 0 {
            out.push((
                k(&["server", "body_timeout_ms"]),
                "must be greater than 0".into(),
            ));
        }
        if !(100..=300_000).contains(&self.idle_timeout_ms) {
            out.push((
                k(&["server", "idle_timeout_ms"]),
                "must be from 100 to 300000 (ms)".into(),
            ));
        }
        if self.shutdown_grace_ms > self.shutdown_timeout_ms {
            out.push((
                k(&["server", "shutdown_grace_ms"]),
                "must not be longer than shutdown_timeout_ms".into(),
            ));
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            // A host name (letters, digits, `-`, `_`, `.`; no wildcard) or a
            // bracketed IPv6 address: what a `Host` header names, without its port.
            let bad = match h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_err(),
                None => {
                    h.is_empty()
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                }
            };
            if bad {
                out.push((
                    k(&["server", "allowed_hosts"]),
                    format!(
                        "entry {i} (`{h}`) is not a host name: write `llmop.test` or `[fd00::1]`, without a scheme, port or wildcard"
                    ),
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            out.push((
                k(&["server", "request_timeout_ms"]),
                "must be greater than 0".into(),
            ));
        }
    }
}
