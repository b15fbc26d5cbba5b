//! Flow endpoints: list, start, rerun, release, hold and unhold. Every action
//! records who (`by`, default "api") and why (`comment`) as a `flow.action` event.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::schedule::engine::{Cmd, Rerun};

type Params = Query<HashMap<String, String>>;

fn err((code, msg): (u16, String)) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(code).unwrap_or(StatusCode::CONFLICT),
        msg,
    )
}

fn who(q: &HashMap<String, String>) -> (String, String) {
    let by = q
        .get("by")
        .filter(|b| !b.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "api".into());
    (by, q.get("comment").cloned().unwrap_or_default())
}

pub async fn list(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!(s.flows.views()))
}

pub async fn one(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = s
        .flows
        .view(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no flow named \"{name}\"")))?;
    let runs = s.store.flow_runs(&name, 20)?;
    let mut v = json!(view);
    v["runs"] = json!(runs);
    Ok(Json(v))
}

pub async fn holds(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.store.holds()?)))
}

pub async fn run(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (by, _) = who(&q);
    let id = s
        .flows
        .ask(|reply| Cmd::Start {
            flow: name.clone(),
            by,
            reply,
        })
        .await
        .map_err(err)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "flow": name, "flow_run": id })),
    ))
}

/// `POST /api/v1/flows/{name}/rerun?from_failed` | `?from=JOB` | `?only=JOB`, plus `by`, `comment`.
pub async fn rerun(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let how = match (q.contains_key("from_failed"), q.get("from"), q.get("only")) {
        (true, None, None) => Rerun::FromFailed,
        (false, Some(j), None) => Rerun::From(j.clone()),
        (false, None, Some(j)) => Rerun::Only(j.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "say how to rerun: exactly one of `from_failed`, `from=JOB`, `only=JOB`",
            ))
        }
    };
    if s.flows.view(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no flow named \"{name}\""),
        ));
    }
    let (by, comment) = who(&q);
    let run = super::api::num::<i64>(&q, "run")?;
    let id = s
        .flows
        .ask(|reply| Cmd::Rerun {
            flow: name.clone(),
            how,
            run,
            by,
            comment,
            reply,
        })
        .await
        .map_err(err)?;
    Ok(Json(json!({ "flow": name, "flow_run": id })))
}

pub async fn release(
    State(s): State<Arc<AppState>>,
    Path(job): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let (by, comment) = who(&q);
    let run = super::api::num::<i64>(&q, "run")?;
    let id = s
        .flows
        .ask(|reply| Cmd::Release {
            job: job.clone(),
            run,
            by,
            comment,
            reply,
        })
        .await
        .map_err(err)?;
    Ok(Json(json!({ "job": job, "flow_run": id })))
}

pub async fn hold(
    State(s): State<Arc<AppState>>,
    Path(target): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let (by, comment) = who(&q);
    s.flows
        .ask(|reply| Cmd::Hold {
            target: target.clone(),
            by,
            comment,
            reply,
        })
        .await
        .map_err(err)?;
    Ok(Json(json!({ "held": target })))
}

pub async fn unhold(
    State(s): State<Arc<AppState>>,
    Path(target): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let (by, _) = who(&q);
    s.flows
        .ask(|reply| Cmd::Unhold {
            target: target.clone(),
            by,
            reply,
        })
        .await
        .map_err(err)?;
    Ok(Json(json!({ "unheld": target })))
}
