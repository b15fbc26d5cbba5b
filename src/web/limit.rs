//! Per-client rate limiting of the HTTP API (`[agent] rate_limit`,
//! `rate_burst`, `rate_limit_loopback`): one token bucket per client address,
//! the "N requests per second" access limiter of the seed incident (003).
//!
//! A client is its peer IP address (IPv6: its /64, since one host holds a
//! whole /64 and could otherwise step around its bucket). `X-Forwarded-For`
//! is not trusted: behind a proxy every request shares the proxy's bucket.
//! An empty bucket answers `429` with `Retry-After` (whole seconds until one
//! request is allowed again) and a JSON body. The limiter runs before the
//! token check, so guessing tokens is rate limited too.
//!
//! Memory is bounded: at most `MAX_CLIENTS` buckets. When a new client would
//! exceed it, buckets that have refilled completely (the client has been idle
//! long enough that forgetting it changes nothing) are dropped; if none has,
//! the least recently seen one goes.
//!
//! Written by hand rather than with `governor`/`tower_governor`: the bucket is
//! twenty lines, and this way eviction, the loopback exemption and the JSON
//! 429 body follow our rules without adapting another crate's key extractors.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::time::Instant;

use crate::config::RateLimit;

/// The most clients tracked at once.
pub const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allow,
    /// Refused; one request will be allowed again after this long.
    Deny(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The pure part: token buckets keyed by client, fed the time from outside.
#[derive(Debug)]
pub struct Buckets {
    per_sec: f64,
    burst: f64,
    max_clients: usize,
    clients: HashMap<IpAddr, Bucket>,
}

impl Buckets {
    pub fn new(rate: RateLimit, max_clients: usize) -> Buckets {
        Buckets {
            per_sec: rate.per_sec.max(f64::MIN_POSITIVE),
            burst: f64::from(rate.burst.max(1)),
            max_clients: max_clients.max(1),
            clients: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Takes one request from `client`'s bucket at `now`.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Decision {
        let key = client_key(client);
        if !self.clients.contains_key(&key) && self.clients.len() >= self.max_clients {
            self.evict(now);
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let b = self.clients.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::Allow
        } else {
            Decision::Deny(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }

    /// Makes room for one more client.
    fn evict(&mut self, now: Instant) {
        let (per_sec, burst) = (self.per_sec, self.burst);
        self.clients.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_sec < burst
        });
        if self.clients.len() >= self.max_clients {
            if let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| *k)
            {
                self.clients.remove(&oldest);
            }
        }
    }
}

/// IPv4 (and IPv4-mapped IPv6) as is; other IPv6 addresses by their /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The shared limiter the middleware uses.
pub struct Limiter {
    rate: RateLimit,
    loopback_too: bool,
    buckets: Mutex<Buckets>,
    /// Requests refused, for `/metrics` (since the agent started).
    refused: Arc<AtomicU64>,
}

impl Limiter {
    pub fn new(rate: RateLimit, loopback_too: bool, refused: Arc<AtomicU64>) -> Limiter {
        Limiter {
            rate,
            loopback_too,
            buckets: Mutex::new(Buckets::new(rate, MAX_CLIENTS)),
            refused,
        }
    }

    fn check(&self, ip: IpAddr) -> Decision {
        if !self.loopback_too && is_loopback(ip) {
            return Decision::Allow;
        }
        match self.buckets.lock() {
            Ok(mut b) => b.check(ip, Instant::now()),
            // A panic elsewhere while holding the lock: fail open rather than
            // lock every client out.
            Err(_) => Decision::Allow,
        }
    }
}

/// The middleware: 429 with `Retry-After` when the client's bucket is empty.
pub async fn limit(State(l): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Without a peer address (a router used without connect info) there is
    // no client to count.
    let Some(ip) = peer else {
        return next.run(req).await;
    };
    match l.check(ip) {
        Decision::Allow => next.run(req).await,
        Decision::Deny(wait) => {
            l.refused.fetch_add(1, Ordering::Relaxed);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "error": format!(
                        "rate limit exceeded: at most {} requests per second (burst {}) per client; retry in {secs} s",
                        fmt_rate(l.rate.per_sec),
                        l.rate.burst
                    ),
                    "retry_after": secs,
                })),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}

fn fmt_rate(per_sec: f64) -> String {
    if per_sec.fract() == 0.0 {
        format!("{per_sec:.0}")
    } else {
        format!("{per_sec:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rate(per_sec: f64, burst: u32) -> RateLimit {
        RateLimit { per_sec, burst }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_at_the_rate() {
        let mut b = Buckets::new(rate(2.0, 3), 100);
        let c = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(b.check(c, Instant::now()), Decision::Allow);
        }
        match b.check(c, Instant::now()) {
            Decision::Deny(w) => assert_eq!(w, Duration::from_millis(500)),
            d => panic!("expected a denial, got {d:?}"),
        }
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(matches!(b.check(c, Instant::now()), Decision::Deny(_)));
        // Denied requests cost nothing: the bucket keeps filling.
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(b.check(c, Instant::now()), Decision::Allow);
        assert!(matches!(b.check(c, Instant::now()), Decision::Deny(_)));
        // Idle for long: back to the burst, never above it.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(b.check(c, Instant::now()), Decision::Allow);
        }
        assert!(matches!(b.check(c, Instant::now()), Decision::Deny(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn clients_have_their_own_buckets() {
        let mut b = Buckets::new(rate(1.0, 1), 100);
        assert_eq!(b.check(ip("10.0.0.1"), Instant::now()), Decision::Allow);
        assert!(matches!(
            b.check(ip("10.0.0.1"), Instant::now()),
            Decision::Deny(_)
        ));
        assert_eq!(b.check(ip("10.0.0.2"), Instant::now()), Decision::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_clients_share_their_64() {
        let mut b = Buckets::new(rate(1.0, 1), 100);
        assert_eq!(
            b.check(ip("2001:db8:1:2::1"), Instant::now()),
            Decision::Allow
        );
        assert!(matches!(
            b.check(ip("2001:db8:1:2:ffff::9"), Instant::now()),
            Decision::Deny(_)
        ));
        assert_eq!(
            b.check(ip("2001:db8:1:3::1"), Instant::now()),
            Decision::Allow
        );
        // IPv4-mapped is the IPv4 client.
        assert_eq!(b.check(ip("192.0.2.7"), Instant::now()), Decision::Allow);
        assert!(matches!(
            b.check(ip("::ffff:192.0.2.7"), Instant::now()),
            Decision::Deny(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_idle_clients_go_first() {
        let mut b = Buckets::new(rate(1.0, 2), 3);
        // a is busy (bucket not full), b and c too.
        for c in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            b.check(ip(c), Instant::now());
        }
        assert_eq!(b.len(), 3);
        // A fourth client: none has refilled, so the least recently seen goes.
        tokio::time::advance(Duration::from_millis(100)).await;
        b.check(ip("10.0.0.2"), Instant::now());
        b.check(ip("10.0.0.3"), Instant::now());
        b.check(ip("10.0.0.4"), Instant::now());
        assert_eq!(b.len(), 3);
        assert!(!b.clients.contains_key(&ip("10.0.0.1")));
        // After everyone has been idle long enough to refill, a new client
        // clears them all out at once.
        tokio::time::advance(Duration::from_secs(10)).await;
        b.check(ip("10.0.0.5"), Instant::now());
        assert_eq!(b.len(), 1);
        // Many distinct clients never grow the map past its bound.
        for i in 0..1000u32 {
            b.check(IpAddr::V4(i.into()), Instant::now());
            assert!(b.len() <= 3);
        }
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback(ip("127.0.0.1")));
        assert!(is_loopback(ip("127.8.9.10")));
        assert!(is_loopback(ip("::1")));
        assert!(is_loopback(ip("::ffff:127.0.0.1")));
        assert!(!is_loopback(ip("10.0.0.1")));
        assert!(!is_loopback(ip("::ffff:10.0.0.1")));
        assert!(!is_loopback(ip("2001:db8::1")));
    }
}
