//! The `etcd` coordination backend, through etcd's v3 JSON gateway
//! (`POST /v3/lease/grant`, `/v3/lease/keepalive`, `/v3/lease/revoke`,
//! `/v3/kv/txn`, `/v3/kv/put`, `/v3/kv/range`, `/v3/kv/deleterange`,
//! `/v3/auth/authenticate`; keys and values base64, int64 as strings).
//!
//! Why the gateway and not the `etcd-client` crate (gRPC): `etcd-client`
//! generates its code with `protoc` at build time and brings tonic and prost;
//! that is a system package the README's `cargo run` would need on a fresh
//! machine and minutes more of building on our 2-core CI, for five unary
//! calls. `reqwest` (rustls, JSON) is already a dependency. What we give up:
//! streaming watches and keep-alives over one HTTP/2 stream. We poll instead
//! (`[cluster] poll_interval`, default 100 ms, a few small requests per node
//! per second) and send each keep-alive as its own request; both are well
//! inside the lease budget. Verified against etcd 3.4.23 (Debian 12), whose
//! gateway prefix is `/v3` (3.2 and older used `/v3beta` / `/v3alpha`).
//!
//! Several `endpoints`: a request goes to the last endpoint that answered and
//! moves on to the next when one is unreachable. TLS: `ca_file`, and
//! `cert_file` + `key_file` for client certificates. Auth: `username` and
//! `password_file` get a token from `/v3/auth/authenticate`, sent as the
//! `Authorization` header and renewed when etcd says it is invalid.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::{BoxFut, CoordError, CoordResult, Coordinator, Guard, Kv, Op};
use crate::config::cluster::EtcdConfig;

pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: AtomicUsize,
    auth: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// etcd's JSON encodes int64 as a string; an absent field is 0.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key just past every key starting with `prefix` (etcd's range_end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kv(v: &Value) -> CoordResult<Kv> {
    let dec = |f: &str| -> CoordResult<Vec<u8>> {
        match v.get(f).and_then(Value::as_str) {
            None => Ok(Vec::new()),
            Some(s) => B64
                .decode(s)
                .map_err(|e| CoordError::Store(format!("bad base64 in `{f}`: {e}"))),
        }
    };
    Ok(Kv {
        key: String::from_utf8_lossy(&dec("key")?).into_owned(),
        value: dec("value")?,
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
        lease: int(&v["lease"]),
    })
}

/// The JSON of a `/v3/kv/txn` request (compare `result` defaults to EQUAL).
fn txn_body(guards: &[Guard], ops: &[Op]) -> Value {
    let compare: Vec<Value> = guards
        .iter()
        .map(|g| match g {
            Guard::Created(k, rev) => {
                json!({"key": b64(k.as_bytes()), "target": "CREATE", "create_revision": rev.to_string()})
            }
            Guard::Modified(k, rev) => {
                json!({"key": b64(k.as_bytes()), "target": "MOD", "mod_revision": rev.to_string()})
            }
        })
        .collect();
    let success: Vec<Value> = ops
        .iter()
        .map(|o| match o {
            Op::Put { key, value, lease } => {
                json!({"request_put": {"key": b64(key.as_bytes()), "value": b64(value), "lease": lease.to_string()}})
            }
            Op::Delete(k) => json!({"request_delete_range": {"key": b64(k.as_bytes())}}),
        })
        .collect();
    json!({"compare": compare, "success": success})
}

impl Etcd {
    pub fn new(cfg: &EtcdConfig, lease_ttl: Duration) -> anyhow::Result<Etcd> {
        // A request must never outlive the time the caller has to act on its
        // failure (self-fencing runs at half the lease).
        let timeout = super::request_timeout(lease_ttl);
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("cannot read ca_file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                b = b.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
            let mut pem = std::fs::read(cert)
                .map_err(|e| anyhow::anyhow!("cannot read cert_file {}: {e}", cert.display()))?;
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| anyhow::anyhow!("cannot read key_file {}: {e}", key.display()))?,
            );
            b = b.identity(reqwest::Identity::from_pem(&pem)?);
        }
        let auth = match (&cfg.username, &cfg.password_file) {
            (Some(u), Some(p)) => {
                let pw = std::fs::read_to_string(p).map_err(|e| {
                    anyhow::anyhow!("cannot read password_file {}: {e}", p.display())
                })?;
                Some((u.clone(), pw.trim_end_matches(['\n', '\r']).to_string()))
            }
            _ => None,
        };
        Ok(Etcd {
            http: b.build()?,
            endpoints: cfg
                .endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            auth,
            token: Mutex::new(None),
        })
    }

    async fn authenticate(&self, base: &str) -> CoordResult<Option<String>> {
        let Some((name, password)) = &self.auth else {
            return Ok(None);
        };
        let v = self
            .send(
                base,
                "/v3/auth/authenticate",
                &json!({"name": name, "password": password}),
                None,
            )
            .await?;
        let t = v["token"].as_str().map(str::to_string);
        if t.is_none() {
            return Err(CoordError::Store(
                "etcd authentication returned no token".into(),
            ));
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = t.clone();
        Ok(t)
    }

    async fn send(
        &self,
        base: &str,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> CoordResult<Value> {
        let mut req = self.http.post(format!("{base}{path}")).json(body);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let resp = req.send().await.map_err(|e| {
            CoordError::Unreachable(format!("{base}: {}", crate::probe::probes::chain(&e)))
        })?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| CoordError::Unreachable(format!("{base}: {e}")))?;
        if let Some(msg) = v.get("error").and_then(Value::as_str) {
            return Err(CoordError::Store(format!(
                "{msg} (code {})",
                int(&v["code"])
            )));
        }
        if !status.is_success() {
            return Err(CoordError::Store(format!("{base}{path}: HTTP {status}")));
        }
        Ok(v)
    }

    /// One call, on the current endpoint, then the others; auth on demand.
    async fn call(&self, path: &str, body: Value) -> CoordResult<Value> {
        let n = self.endpoints.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        let mut last = CoordError::Unreachable("no endpoints".into());
        for i in 0..n {
            let idx = (start + i) % n;
            let Some(base) = self.endpoints.get(idx) else {
                break;
            };
            let mut token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if token.is_none() && self.auth.is_some() {
                match self.authenticate(base).await {
                    Ok(t) => token = t,
                    Err(e @ CoordError::Unreachable(_)) => {
                        last = e;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.send(base, path, &body, token.as_deref()).await {
                Ok(v) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(CoordError::Store(m)) if m.contains("invalid auth token") => {
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    last = CoordError::Store(m);
                }
                Err(e @ CoordError::Unreachable(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

impl Coordinator for Etcd {
    fn grant(&self, ttl: Duration) -> BoxFut<'_, i64> {
        Box::pin(async move {
            let secs = ttl.as_secs().max(1);
            let v = self.call("/v3/lease/grant", json!({"TTL": secs})).await?;
            match int(&v["ID"]) {
                0 => Err(CoordError::Store("lease grant returned no ID".into())),
                id => Ok(id),
            }
        })
    }

    fn keep_alive(&self, lease: i64) -> BoxFut<'_, Option<Duration>> {
        Box::pin(async move {
            let v = self
                .call("/v3/lease/keepalive", json!({"ID": lease.to_string()}))
                .await?;
            // An unknown or expired lease answers with no (zero) TTL.
            match int(&v["result"]["TTL"]) {
                t if t > 0 => Ok(Some(Duration::from_secs(t as u64))),
                _ => Ok(None),
            }
        })
    }

    fn revoke(&self, lease: i64) -> BoxFut<'_, ()> {
        Box::pin(async move {
            match self
                .call("/v3/lease/revoke", json!({"ID": lease.to_string()}))
                .await
            {
                Err(CoordError::Store(m)) if m.contains("lease not found") => Ok(()),
                other => other.map(|_| ()),
            }
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: &'a [u8], lease: i64) -> BoxFut<'a, Option<i64>> {
        Box::pin(async move {
            let k = b64(key.as_bytes());
            let v = self
                .call(
                    "/v3/kv/txn",
                    json!({
                        "compare": [{"key": k, "target": "CREATE", "create_revision": "0"}],
                        "success": [{"request_put": {"key": k, "value": b64(value), "lease": lease.to_string()}}],
                    }),
                )
                .await?;
            if v["succeeded"].as_bool() == Some(true) {
                // The txn's revision is the revision the key was created at.
                Ok(Some(int(&v["header"]["revision"])))
            } else {
                Ok(None)
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], lease: i64) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.call(
                "/v3/kv/put",
                json!({"key": b64(key.as_bytes()), "value": b64(value), "lease": lease.to_string()}),
            )
            .await
            .map(|_| ())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Option<Kv>> {
        Box::pin(async move {
            let v = self
                .call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))
                .await?;
            match v["kvs"].as_array().and_then(|a| a.first()) {
                Some(x) => kv(x).map(Some),
                None => Ok(None),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Vec<Kv>> {
        Box::pin(async move {
            let v = self
                .call(
                    "/v3/kv/range",
                    json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))}),
                )
                .await?;
            v["kvs"]
                .as_array()
                .map(|a| a.iter().map(kv).collect())
                .unwrap_or(Ok(Vec::new()))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))
                .await
                .map(|_| ())
        })
    }

    fn txn<'a>(&'a self, guards: &'a [Guard], ops: &'a [Op]) -> BoxFut<'a, bool> {
        Box::pin(async move {
            let v = self.call("/v3/kv/txn", txn_body(guards, ops)).await?;
            Ok(v["succeeded"].as_bool() == Some(true))
        })
    }

    fn describe(&self) -> String {
        format!("etcd ({})", self.endpoints.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }

    #[test]
    fn int64_fields_come_as_strings_or_are_absent() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
    }
}
