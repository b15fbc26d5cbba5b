//! Cluster endpoints (src/cluster/): nodes, groups, switchover, drills, and
//! the peer question of `on_store_loss = "keep-if-all-peers-agree"`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::cluster::Cluster;

type Params = Query<HashMap<String, String>>;

fn err((code, msg): (u16, String)) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(code).unwrap_or(StatusCode::CONFLICT),
        msg,
    )
}

fn cluster(s: &AppState) -> Result<&Cluster, ApiError> {
    s.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this agent is not in a cluster: its config has no [cluster] or [[group]]",
        )
    })
}

fn by(q: &HashMap<String, String>) -> String {
    q.get("by")
        .filter(|b| !b.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "api".into())
}

pub async fn nodes(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(cluster(&s)?.nodes().await.map_err(err)?))
}

pub async fn groups(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(cluster(&s)?.groups().await.map_err(err)?)))
}

pub async fn group(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let all = cluster(&s)?.groups().await.map_err(err)?;
    let g = all.into_iter().find(|g| g.name == name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no group named \"{name}\""))
    })?;
    let mut v = json!(g);
    v["drills"] = json!(s.store.drills(Some(&name), 20)?);
    Ok(Json(v))
}

pub async fn switchover(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let to = q.get("to").filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::bad_request("query parameter `to` (the target node) is required")
    })?;
    Ok(Json(
        cluster(&s)?
            .switchover(&name, to, &by(&q))
            .await
            .map_err(err)?,
    ))
}

pub async fn drill(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let rec = crate::cluster::drill::run(cluster(&s)?, &name, &format!("manual ({})", by(&q)))
        .await
        .map_err(err)?;
    Ok(Json(json!(rec)))
}

pub async fn drills(
    State(s): State<Arc<AppState>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let limit = super::api::limit(&q, 50)?;
    let group = q.get("group").map(String::as_str);
    Ok(Json(json!(s.store.drills(group, limit)?)))
}

pub async fn peer(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(cluster(&s)?.peer_status().await))
}
