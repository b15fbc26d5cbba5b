//! Handlers of `/api/v1`. Query parameters are parsed by hand so that a bad
//! value gets a message naming the parameter, not a framework rejection.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::supervise::{CmdError, Command};

type Params = Query<HashMap<String, String>>;

fn num<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter `{key}`: \"{v}\" is not a valid number"
            ))
        }),
    }
}

fn limit(q: &HashMap<String, String>, default: u32) -> Result<u32, ApiError> {
    Ok(num::<u32>(q, "limit")?.unwrap_or(default).clamp(1, 10_000))
}

impl From<CmdError> for ApiError {
    fn from(e: CmdError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::CONFLICT);
        ApiError::new(status, e.error)
    }
}

fn known(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.sup.exists(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no unit named \"{name}\""),
        ))
    }
}

pub async fn units(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!(s.sup.statuses()))
}

pub async fn unit(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let status = s
        .sup
        .status(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no unit named \"{name}\"")))?;
    let runs = s.store.runs(Some(&name), 10)?;
    let mut v = json!(status);
    v["recent_runs"] = json!(runs);
    Ok(Json(v))
}

pub async fn runs(
    State(s): State<Arc<AppState>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let unit = q.get("unit").map(String::as_str);
    if let Some(u) = unit {
        known(&s, u)?;
    }
    Ok(Json(json!(s.store.runs(unit, limit(&q, 50)?)?)))
}

pub async fn run(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("run id \"{id}\" is not a number")))?;
    match s.store.run(id)? {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run with id {id}"),
        )),
    }
}

pub async fn events(
    State(s): State<Arc<AppState>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let unit = q.get("unit").map(String::as_str);
    let after = num::<i64>(&q, "after")?;
    Ok(Json(json!(s.store.events(unit, after, limit(&q, 100)?)?)))
}

/// `GET /api/v1/units/{name}/logs?from=OFFSET&run=ID&max=BYTES`
pub async fn logs(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    known(&s, &name)?;
    let max = num::<usize>(&q, "max")?
        .unwrap_or(1 << 20)
        .clamp(1, 8 << 20);
    let mut from = num::<u64>(&q, "from")?;
    let mut to = None;
    let mut running = false;
    if let Some(run_id) = num::<i64>(&q, "run")? {
        let run = s
            .store
            .run(run_id)?
            .filter(|r| r.unit == name)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no run {run_id} of unit \"{name}\""),
                )
            })?;
        from = Some(from.unwrap_or(run.log_start).max(run.log_start));
        to = run.log_end;
        running = run.log_end.is_none();
    }
    let dir = s.logs_dir.join(&name);
    let chunk =
        crate::supervise::logs::read_range(&dir, from.unwrap_or(0), to, max).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading logs: {e}"),
            )
        })?;
    let mut v = json!(chunk);
    // `complete`: a run's range has been read to its end; nothing more will come.
    v["complete"] = json!(to.is_some_and(|t| chunk.end >= t) && !running);
    Ok(Json(v))
}

pub async fn unit_action(
    State(s): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    known(&s, &name)?;
    let by = "api".to_string();
    let message = match action.as_str() {
        "start" => {
            s.sup
                .ask(&name, |reply| Command::Start { by, reply })
                .await?
        }
        "stop" => {
            s.sup
                .ask(&name, |reply| Command::Stop { by, reply })
                .await?
        }
        "restart" => {
            s.sup
                .ask(&name, |reply| Command::Restart { by, reply })
                .await?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown action \"{other}\"; expected start, stop or restart"),
            ))
        }
    };
    Ok(Json(json!({ "unit": name, "result": message })))
}

pub async fn run_job(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known(&s, &name)?;
    let by = "api".to_string();
    let run_id = s.sup.ask(&name, |reply| Command::Run { by, reply }).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "unit": name, "run_id": run_id })),
    ))
}
