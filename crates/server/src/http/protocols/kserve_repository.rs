//! KServe v2 / Triton model repository extension (admin scope):
//! `POST /v2/repository/index`, `POST /v2/repository/models/{m}/load`, `.../unload`.
//!
//! The repository is still polled; `unload` takes every version of a model out of service (in-
//! flight requests finish first) and keeps it out until `load`, which reconciles the model with
//! the repository at once and answers only when a version serves (or with the load error).

use std::collections::BTreeMap;

use aiserve_core::state::VersionState;
use aiserve_core::ModelName;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{Error, HttpError};
use crate::http::state::{parse_json, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
}

fn manager(state: &AppState) -> Result<&aiserve_runtime::manager::Manager, Error> {
    state.manager.as_deref().ok_or_else(|| Error::NotFound("this server has no model repository".into()))
}

/// Triton's state names.
fn triton_state(s: VersionState) -> &'static str {
    match s {
        VersionState::Available => "READY",
        VersionState::Loading => "LOADING",
        VersionState::Unloading => "UNLOADING",
        VersionState::End | VersionState::Failed => "UNAVAILABLE",
    }
}

async fn index(State(state): State<AppState>, body: Body) -> Result<Json<Value>, HttpError> {
    let body = state.read_body(body).await?;
    let ready_only = if body.bytes.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let req: serde_json::Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
        match req.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(Error::invalid(
                    "ready",
                    format!("`ready` must be a boolean, got {}", crate::error::shown(other)),
                )
                .into())
            }
        }
    };
    let m = manager(&state)?;
    let scan = m.scan().await.unwrap_or_default();
    let unloaded = m.unloaded_models();
    let mut rows: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for st in state.registry.statuses() {
        for v in &st.versions {
            let mut row =
                json!({ "name": st.name.as_str(), "version": v.version.to_string(), "state": triton_state(v.state) });
            let reason = match (&v.error, v.state) {
                (Some(e), _) => Some(e.clone()),
                (None, VersionState::End) => Some("unloaded".to_string()),
                _ => None,
            };
            if let Some(r) = reason {
                row["reason"] = Value::from(r);
            }
            rows.insert((st.name.to_string(), v.version.0), row);
        }
    }
    // Versions on disk the server does not hold: unloaded by request, or outside the policy.
    for (name, found) in &scan.models {
        for v in found.versions.keys() {
            rows.entry((name.to_string(), v.0)).or_insert_with(|| {
                let reason = if unloaded.contains(name) { "unloaded" } else { "not selected by the version policy" };
                json!({ "name": name.as_str(), "version": v.to_string(), "state": "UNAVAILABLE", "reason": reason })
            });
        }
    }
    let list: Vec<Value> = rows.into_values().filter(|r| !ready_only || r["state"] == "READY").collect();
    Ok(Json(Value::Array(list)))
}

fn model_name(model: &str) -> Result<ModelName, Error> {
    model.parse().map_err(|_| Error::ModelNotFound(model.to_owned()))
}

async fn load(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    let name = model_name(&model)?;
    match manager(&state)?.load_model(&name).await {
        Ok(()) => Ok(Json(json!({}))),
        Err(e) if e.contains("not in the repository") => Err(Error::ModelNotFound(model).into()),
        Err(e) => Err(Error::invalid("model", e).into()),
    }
}

async fn unload(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    let name = model_name(&model)?;
    match manager(&state)?.unload_model(&name).await {
        Ok(()) => Ok(Json(json!({}))),
        Err(_) => Err(Error::ModelNotFound(model).into()),
    }
}
