//! `grpc.health.v1.Health` (what Kubernetes gRPC probes and grpc-health-probe call), answered
//! from the registry's state: the empty service name is the process (SERVING from the first
//! moment, like `/v2/health/live`); `inference.GRPCInferenceService` and `ready` are SERVING
//! once the first repository poll has loaded what the policies ask for, like
//! `/v2/health/ready` (NOT_SERVING again once shutdown begins). `Watch` sends the status at once and again whenever it changes.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::http::state::AppState;

/// The service names readiness answers for.
const READY_NAMES: [&str; 2] = ["inference.GRPCInferenceService", "ready"];

pub struct Health {
    state: AppState,
}

impl Health {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn status_of(state: &AppState, service: &str) -> Result<ServingStatus, Status> {
    if service.is_empty() || service == "live" {
        Ok(ServingStatus::Serving)
    } else if READY_NAMES.contains(&service) {
        Ok(if state.registry.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing })
    } else {
        Err(Status::not_found(format!(
            "unknown service {:?}; this server reports \"\", \"live\", \"ready\" and \"inference.GRPCInferenceService\"",
            crate::error::shown(serde_json::Value::from(service))
        )))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let status = status_of(&self.state, &req.get_ref().service)?;
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let service = req.into_inner().service;
        let first = status_of(&self.state, &service)?;
        let state = self.state.clone();
        // Readiness changes at most twice (ready, then draining); a slow poll is all a watcher needs.
        let stream =
            futures_util::stream::unfold((None, first, state, service), |(last, now, state, service)| async move {
                let mut now = now;
                if last == Some(now) {
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        now = status_of(&state, &service).unwrap_or(ServingStatus::ServiceUnknown);
                        if Some(now) != last {
                            break;
                        }
                    }
                }
                let next = status_of(&state, &service).unwrap_or(ServingStatus::ServiceUnknown);
                Some((Ok(HealthCheckResponse { status: now as i32 }), (Some(now), next, state, service)))
            });
        Ok(Response::new(Box::pin(stream)))
    }
}
