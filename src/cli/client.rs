//! The CLI's side of the API: finds the agent through the config (listen
//! address, token file) and turns failures into messages that say what to do.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::config::Config;

pub struct Client {
    base: String,
    http: reqwest::Client,
    token_file: std::path::PathBuf,
}

impl Client {
    pub fn new(config: &Config) -> Result<Client> {
        let mut addr = config.agent.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(Client {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(150)) // a drill takes up to ~2 min
                .no_proxy()
                .build()
                .context("cannot build the HTTP client")?,
            token_file: config.agent.token_file.clone(),
        })
    }

    fn token(&self) -> Result<String> {
        let t = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "cannot read the API token from {} (it is created by the agent on its first start)",
                self.token_file.display()
            )
        })?;
        Ok(t.trim().to_string())
    }

    /// A GET, with the token when this user can read it: reads may need it
    /// (`[agent] read_auth`), but one who cannot read the token file can
    /// still read an agent whose reads are open to them.
    fn read(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match self.token() {
            Ok(t) => req.bearer_auth(t),
            Err(_) => req,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .read(path)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(resp).await
    }

    /// A GET whose successful answer is text (CSV), not JSON.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self
            .read(path)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            return resp.text().await.context("reading the agent's answer");
        }
        Self::decode(resp).await.map(|_| String::new())
    }

    pub async fn post(&self, path: &str) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token()?)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(resp).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(self.token()?)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(resp).await
    }

    /// A POST with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token()?)
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(resp).await
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the agent at {} ({e}); is `mamori agent -c CONFIG` running with this config?",
            self.base
        )
    }

    async fn decode(resp: reqwest::Response) -> Result<Value> {
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("the agent answered {status} with a body that is not JSON"))?;
        if status.is_success() {
            Ok(body)
        } else {
            let msg = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error message");
            bail!("{msg} (HTTP {})", status.as_u16())
        }
    }
}
