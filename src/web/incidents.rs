//! `/api/v1/incidents`: list, show, open, post an update, resolve. Bodies are
//! JSON; every bad value is a 400 naming it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::alert::db::AlertStore;
use crate::incident::{IncidentError, OpenRequest};

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        let status = match &e {
            IncidentError::NotFound(_) => StatusCode::NOT_FOUND,
            IncidentError::Resolved(_) => StatusCode::CONFLICT,
            IncidentError::Invalid(_) => StatusCode::BAD_REQUEST,
            IncidentError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

pub fn incident_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("incident id \"{id}\" is not a number")))
}

/// `GET /api/v1/incidents?all=true&limit=N`: open incidents (or all), newest first.
pub async fn list(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let all = match q.get("all").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "query parameter `all`: \"{v}\"; expected true or false"
            )))
        }
    };
    let limit = super::api::limit(&q, 100)?;
    Ok(Json(json!(s.incidents.store.incidents(all, limit)?)))
}

pub async fn show(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.incidents.get(incident_id(&id)?)?)))
}

/// `POST /api/v1/incidents` with `{"title", "message", "state", "impact",
/// "owner", "components", "alerts", "by"}` (only `title` required): `201`.
pub async fn open(
    State(s): State<Arc<AppState>>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let r: OpenRequest = super::json_body(&bytes, None)?;
    for a in &r.alerts {
        if s.alerts.store.alert(*a)?.is_none() {
            return Err(ApiError::bad_request(format!("no alert with id {a}")));
        }
    }
    Ok((StatusCode::CREATED, Json(json!(s.incidents.open(r)?))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/v1/incidents/{id}/updates` with `{"state", "message", "by"}`;
/// `state` defaults to the incident's current one.
pub async fn update(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = incident_id(&id)?;
    let b: UpdateBody = super::json_body(&bytes, None)?;
    let state = match b.state {
        Some(st) => st,
        None => s.incidents.get(id)?.state,
    };
    let by = b.by.unwrap_or_else(|| "api".into());
    Ok(Json(json!(s
        .incidents
        .update(id, &state, &b.message, &by)?)))
}

/// `POST /api/v1/incidents/{id}/resolve` with an optional `{"message", "by"}`.
pub async fn resolve(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = incident_id(&id)?;
    let b: UpdateBody = super::json_body(&bytes, Some(UpdateBody::default()))?;
    if b.state.as_deref().is_some_and(|st| st != "resolved") {
        return Err(ApiError::bad_request(
            "`state` of a resolve is \"resolved\"; post other states to /updates",
        ));
    }
    let message = if b.message.trim().is_empty() {
        "This incident has been resolved.".to_string()
    } else {
        b.message
    };
    let by = b.by.unwrap_or_else(|| "api".into());
    Ok(Json(json!(s
        .incidents
        .update(id, "resolved", &message, &by)?)))
}
