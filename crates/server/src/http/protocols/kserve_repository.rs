//! KServe v2 / Triton model repository extension (admin scope):
//! `POST /v2/repository/index`, `POST /v2/repository/models/{m}/load`, `.../unload`.
//! The work itself (shared with gRPC) is in `crate::kserve::repository`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{Error, HttpError};
use crate::http::state::{parse_json, AppState};
use crate::kserve::repository;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
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
    let rows = repository::index(&state.runtime, ready_only).await?;
    let list = rows
        .into_iter()
        .map(|r| {
            let mut row = json!({ "name": r.name, "version": r.version, "state": r.state });
            if let Some(reason) = r.reason {
                row["reason"] = Value::from(reason);
            }
            row
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn load(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    repository::load(&state.runtime, &model).await?;
    Ok(Json(json!({})))
}

async fn unload(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    repository::unload(&state.runtime, &model).await?;
    Ok(Json(json!({})))
}
