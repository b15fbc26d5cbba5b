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

pub(super) fn num<T: std::str::FromStr>(
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

/// `?limit=N` (1..=10,000), shared by every list endpoint.
pub(super) fn limit(q: &HashMap<String, String>, default: u32) -> Result<u32, ApiError> {
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
    v["leak"] = json!(s.sampler.leak_status(&name));
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
    let tail = num::<usize>(&q, "tail")?;
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
        running = run.state == crate::store::RunState::Running;
    }
    let dir = s.logs_dir.join(&name);
    let read = match tail {
        // The last lines of the range; `from` is only its floor.
        Some(n) => crate::supervise::logs::read_last_lines(&dir, from.unwrap_or(0), to, n, max),
        None => crate::supervise::logs::read_range(&dir, from.unwrap_or(0), to, max),
    };
    let chunk = read.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading logs: {e}"),
        )
    })?;
    let mut v = json!(chunk);
    // `complete`: a run's range has been read to its end; nothing more will come.
    v["complete"] = json!(q.contains_key("run") && !running && to.is_none_or(|t| chunk.end >= t));
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
                .ask(&name, |reply| Command::Start {
                    by,
                    trigger: "manual",
                    reply,
                })
                .await?
        }
        "stop" => {
            s.sup
                .ask(&name, |reply| Command::Stop { by, reply })
                .await?
        }
        "restart" => {
            s.sup
                .ask(&name, |reply| Command::Restart {
                    by,
                    trigger: "manual",
                    reply,
                })
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
    let run_id = s
        .sup
        .ask(&name, |reply| Command::Run {
            by,
            trigger: "manual".into(),
            reply,
            done: None,
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "unit": name, "run_id": run_id })),
    ))
}

pub async fn checks(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!(s.checks.statuses()))
}

pub async fn check(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.checks
        .status(&name)
        .map(|c| Json(json!(c)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no check named \"{name}\"")))
}

/// `POST /api/v1/heartbeats/{name}`: an outside job says it ran.
pub async fn heartbeat(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.checks
        .ping(&name)
        .map(|c| Json(json!(c)))
        .map_err(|(code, msg)| {
            ApiError::new(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                msg,
            )
        })
}

/// `GET /api/v1/host`: the latest host sample.
pub async fn host(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "latest": s.sampler.latest_host(), "leak": s.sampler.leak_status("host") }))
}

/// `GET /api/v1/units/{name}/samples?since=MS&resolution=raw|1m&format=json|csv&limit=N`
pub async fn samples(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    known(&s, &name)?;
    let since = num::<i64>(&q, "since")?.unwrap_or(0);
    let limit = num::<u32>(&q, "limit")?
        .unwrap_or(100_000)
        .clamp(1, 1_000_000);
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query parameter `format`: \"{other}\"; expected json or csv"
            )))
        }
    };
    let text = match q.get("resolution").map(String::as_str) {
        None | Some("raw") => {
            let rows = s.store.samples(&name, since, limit)?;
            if csv {
                let mut out = String::from("ts_ms,rss_bytes,cpu_pct,fds,threads,procs\n");
                for r in rows {
                    out.push_str(&format!(
                        "{},{},{:.2},{},{},{}\n",
                        r.ts, r.rss, r.cpu_pct, r.fds, r.threads, r.procs
                    ));
                }
                out
            } else {
                return Ok(Json(json!(rows)).into_response());
            }
        }
        Some("1m") => {
            let rows = s.store.rollups(&name, since, limit)?;
            if csv {
                let mut out = String::from(
                    "ts_ms,n,rss_min,rss_avg,rss_max,cpu_avg,cpu_max,fds_max,threads_max\n",
                );
                for r in rows {
                    out.push_str(&format!(
                        "{},{},{},{},{},{:.2},{:.2},{},{}\n",
                        r.ts,
                        r.n,
                        r.rss_min,
                        r.rss_avg,
                        r.rss_max,
                        r.cpu_avg,
                        r.cpu_max,
                        r.fds_max,
                        r.threads_max
                    ));
                }
                out
            } else {
                return Ok(Json(json!(rows)).into_response());
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query parameter `resolution`: \"{other}\"; expected raw or 1m"
            )))
        }
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        text,
    )
        .into_response())
}
