//! `/api/v1/alerts`, `/api/v1/silences`, the Alertmanager ingest, and the
//! one-click acknowledge page `/ack/{id}/{token}` (no bearer token: the
//! signed link is the credential, for that alert only; GET shows, POST acts).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::alert::ack_link;
use crate::alert::db::{AlertStore, Silence};
use crate::alert::AlertError;
use crate::event::EventKind;
use crate::util::now_ms;

type Params = Query<HashMap<String, String>>;

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        let status = match e {
            AlertError::NotFound(_) => StatusCode::NOT_FOUND,
            AlertError::AlreadyResolved(_) | AlertError::ClearsByItself { .. } => {
                StatusCode::CONFLICT
            }
            AlertError::Stopped | AlertError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

fn alert_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("alert id \"{id}\" is not a number")))
}

/// A JSON body, or nothing (an empty body is `{}`).
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    super::json_body(bytes, Some(T::default()))
}

/// `GET /api/v1/alerts?state=firing|acknowledged|resolved|all&limit=N`
/// (default: the active ones).
pub async fn list(
    State(s): State<Arc<AppState>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let state = q.get("state").map(String::as_str);
    if let Some(st) = state {
        if !["firing", "acknowledged", "resolved", "all"].contains(&st) {
            return Err(ApiError::bad_request(format!(
                "query parameter `state`: \"{st}\"; expected firing, acknowledged, resolved or all"
            )));
        }
    }
    let limit = super::api::limit(&q, 100)?;
    Ok(Json(json!(s.alerts.store.alerts(state, limit)?)))
}

/// `GET /api/v1/alerts/{id}`: the alert and every delivery attempt.
pub async fn show(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let Some(a) = s.alerts.store.alert(id)? else {
        return Err(AlertError::NotFound(id).into());
    };
    let mut v = json!(a);
    v["deliveries"] = json!(s.alerts.store.deliveries(id)?);
    v["attempts"] = json!(s.alerts.store.attempts(id)?);
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /api/v1/alerts/{id}/ack` with an optional `{"comment": "...", "by": "..."}`.
pub async fn ack(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let b: AckBody = body(&bytes)?;
    let by = b.by.unwrap_or_else(|| "api".into());
    Ok(Json(json!(s.alerts.ack(id, &by, &b.comment).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    #[serde(default)]
    by: Option<String>,
    /// Resolve even an alert that clears by itself and has not yet.
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/alerts/{id}/resolve` with an optional `{"by": "...", "force": true}`.
pub async fn resolve(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let b: ResolveBody = body(&bytes)?;
    let by = b.by.unwrap_or_else(|| "api".into());
    Ok(Json(json!(s.alerts.resolve(id, &by, b.force).await?)))
}

pub async fn silences(
    State(s): State<Arc<AppState>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let all = q.get("all").is_some_and(|v| v == "true" || v == "1");
    Ok(Json(json!(s.alerts.store.silences(now_ms(), all)?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    /// label → pattern; labels: key, rule, subject, severity.
    #[serde(default)]
    matchers: BTreeMap<String, String>,
    /// How long, e.g. "2h".
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /api/v1/silences` with `{"matchers": {"subject": "web"}, "duration": "2h", "comment": "..."}`.
pub async fn add_silence(
    State(s): State<Arc<AppState>>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: SilenceBody = body(&bytes)?;
    if b.matchers.is_empty() {
        return Err(ApiError::bad_request(
            "a silence needs at least one matcher, e.g. {\"subject\": \"web\"}",
        ));
    }
    for k in b.matchers.keys() {
        if !["key", "rule", "subject", "severity"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown matcher label \"{k}\"; expected key, rule, subject or severity"
            )));
        }
    }
    if b.comment.trim().is_empty() {
        return Err(ApiError::bad_request(
            "a silence needs a comment saying why (\"comment\")",
        ));
    }
    let d = b
        .duration
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("a silence needs a \"duration\", e.g. \"2h\""))?;
    let d = crate::config::units::parse_duration(d)
        .map_err(|e| ApiError::bad_request(format!("duration: {e}")))?;
    let now = now_ms();
    let mut silence = Silence {
        id: 0,
        matchers: b.matchers.into_iter().collect(),
        starts_at: now,
        ends_at: now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        comment: b.comment,
        created_by: b.by.unwrap_or_else(|| "api".into()),
        created_at: now,
    };
    silence.id = s.alerts.store.insert_silence(&silence)?;
    tracing::info!(silence = silence.id, by = %silence.created_by, "Silence added.");
    Ok(Json(json!(silence)))
}

pub async fn expire_silence(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("silence id \"{id}\" is not a number")))?;
    if s.alerts.store.expire_silence(id, now_ms())? {
        s.alerts.mutes_changed().await;
        Ok(Json(json!({"id": id, "expired": true})))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active silence with id {id}"),
        ))
    }
}

#[derive(Deserialize)]
struct AmPayload {
    version: String,
    alerts: Vec<AmAlert>,
}

#[derive(Deserialize)]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// `POST /api/v1/alerts/ingest/alertmanager`: Alertmanager's webhook
/// payload (version 4). Each alert becomes an `ingest.firing` or
/// `ingest.resolved` event, which the `alertmanager` rule turns into alerts.
pub async fn ingest_alertmanager(
    State(s): State<Arc<AppState>>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: AmPayload = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("not an Alertmanager webhook payload: {e}")))?;
    if p.version != "4" {
        return Err(ApiError::bad_request(format!(
            "Alertmanager payload version \"{}\"; only version \"4\" is understood",
            p.version
        )));
    }
    // Checked all before any is taken: a refused payload changes nothing.
    let mut keyed = Vec::with_capacity(p.alerts.len());
    for (i, a) in p.alerts.into_iter().enumerate() {
        if a.status != "firing" && a.status != "resolved" {
            return Err(ApiError::bad_request(format!(
                "alerts[{i}]: status \"{}\"; expected \"firing\" or \"resolved\"",
                a.status
            )));
        }
        let key = match a.fingerprint.as_deref().filter(|f| !f.is_empty()) {
            Some(f) => f.to_string(),
            None => a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        };
        if key.is_empty() {
            return Err(ApiError::bad_request(format!(
                "alerts[{i}]: no fingerprint and no labels; nothing identifies the alert (Alertmanager sends both)"
            )));
        }
        keyed.push((key, a));
    }
    let mut accepted = 0;
    for (key, a) in keyed {
        let name = a.labels.get("alertname").cloned().unwrap_or_default();
        let kind = match a.status.as_str() {
            "resolved" => EventKind::IngestResolved {
                source: "alertmanager".into(),
                key,
                name,
            },
            _ => EventKind::IngestFiring {
                source: "alertmanager".into(),
                key,
                name,
                severity: a.labels.get("severity").cloned().unwrap_or_default(),
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                description: a
                    .annotations
                    .get("description")
                    .cloned()
                    .unwrap_or_default(),
                labels: a.labels,
            },
        };
        if s.alerts.bus.emit(kind).is_some() {
            accepted += 1;
        }
    }
    Ok(Json(json!({ "accepted": accepted })))
}

fn page(status: StatusCode, html: String) -> Response {
    let mut r = (status, Html(html)).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

fn bad_link() -> Response {
    page(
        StatusCode::FORBIDDEN,
        ack_link::page(
            "Invalid acknowledge link",
            "unknown",
            Some("This link is not valid for this alert. Use the link from the latest notification, or `mamori ack ID`."),
            false,
        ),
    )
}

/// `GET /ack/{id}/{token}`: shows the alert and an Acknowledge button. Never mutates.
pub async fn link_page(
    State(s): State<Arc<AppState>>,
    Path((id, token)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return bad_link();
    };
    if !s.alerts.key.verify(id, &token) {
        return bad_link();
    }
    match s.alerts.store.alert(id) {
        Ok(Some(a)) => {
            let open = a.state == "firing";
            let msg = match a.state.as_str() {
                "acknowledged" => Some(format!(
                    "Acknowledged by {}.",
                    a.acked_by.clone().unwrap_or_default()
                )),
                "resolved" => Some("Resolved; nothing to do.".to_string()),
                _ => None,
            };
            page(
                StatusCode::OK,
                ack_link::page(&a.title, &a.state, msg.as_deref(), open),
            )
        }
        _ => bad_link(),
    }
}

/// `POST /ack/{id}/{token}`: acknowledges the alert the link was made for.
pub async fn link_ack(
    State(s): State<Arc<AppState>>,
    Path((id, token)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return bad_link();
    };
    if !s.alerts.key.verify(id, &token) {
        tracing::warn!(
            alert = id,
            "An acknowledge link with a bad signature was used."
        );
        return bad_link();
    }
    match s.alerts.ack(id, "link", "acknowledged from the link").await {
        Ok(a) => page(
            StatusCode::OK,
            ack_link::page(&a.title, &a.state, Some("Acknowledged. Thank you."), false),
        ),
        Err(AlertError::AlreadyResolved(_)) => page(
            StatusCode::CONFLICT,
            ack_link::page(
                "Already resolved",
                "resolved",
                Some("This alert is already resolved."),
                false,
            ),
        ),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            ack_link::page(
                "Could not acknowledge",
                "unknown",
                Some(&e.to_string()),
                false,
            ),
        ),
    }
}

/// `POST /api/v1/channels/{name}/test`: a test notification, sent now.
pub async fn test_channel(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match s.alerts.test_channel(&name).await {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no channel named \"{name}\""),
        )),
        Some(Ok(ms)) => Ok(Json(json!({"channel": name, "ok": true, "ms": ms}))),
        Some(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("channel \"{name}\" failed: {e}"),
        )),
    }
}
