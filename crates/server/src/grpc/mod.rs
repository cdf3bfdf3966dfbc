//! The gRPC front end (HTTP/2, served by `crate::listen::serve_wire` on its own port):
//! KServe v2's `inference.GRPCInferenceService` (what `tritonclient.grpc` calls), TF Serving's
//! `PredictionService` and `ModelService` (what `tensorflow-serving-api`'s stubs call), gRPC
//! health checking and server reflection.
//!
//! It is a sibling of `crate::http`: handlers decode protobuf messages into the same
//! transport-free requests (`crate::kserve`), call the same `aiserve_runtime`, and map its
//! errors in `crate::error`. One middleware ([`guard`]) does for every call what the HTTP
//! layers do for every route: the API key (from `authorization: Bearer` or `x-api-key`
//! metadata), the concurrency cap, the in-flight count and the request metrics
//! (`protocol="grpc"`, status = gRPC code name); the HTTP layers for request ids (`x-request-id`
//! metadata, kept from the client or made), log spans and key redaction wrap it too. Messages
//! are limited to the server's body limit (`--max-body-bytes`, not tonic's 4 MiB) and counted
//! against the request's memory hold.

pub mod guard;
pub mod health;
pub mod kserve;
mod kserve_stream;
pub mod tensors;
pub mod tfserving;

use std::time::{Duration, Instant};

use crate::http::state::AppState;
use aiserve_runtime::Error;

/// Code generated from `proto/*.proto` at build time.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    pub mod inference {
        tonic::include_proto!("inference");
    }
    pub mod tensorflow {
        tonic::include_proto!("tensorflow");
        pub mod error {
            tonic::include_proto!("tensorflow.error");
        }
        pub mod serving {
            tonic::include_proto!("tensorflow.serving");
        }
    }

    /// The encoded descriptors of every service here, for server reflection.
    pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

/// The gRPC services behind the guard, as a router the listener serves.
pub fn app(state: AppState) -> axum::Router {
    let limit = state.limits.max_body_bytes;
    let kserve = pb::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(kserve::Kserve::new(
        state.clone(),
    ))
    .max_decoding_message_size(limit)
    .max_encoding_message_size(usize::MAX);
    let predict = pb::tensorflow::serving::prediction_service_server::PredictionServiceServer::new(
        tfserving::Prediction::new(state.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(usize::MAX);
    let models =
        pb::tensorflow::serving::model_service_server::ModelServiceServer::new(tfserving::Models::new(state.clone()));
    let health = tonic_health::pb::health_server::HealthServer::new(health::Health::new(state.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the built-in descriptors are valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the built-in descriptors are valid");
    tonic::service::Routes::new(kserve)
        .add_service(predict)
        .add_service(models)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .into_axum_router()
        .fallback(guard::unimplemented)
        .layer(axum::middleware::from_fn_with_state(state, guard::middleware))
        // The same request ids, spans and key redaction as HTTP (`x-request-id` metadata).
        .layer(tower_http::trace::TraceLayer::new_for_grpc().make_span_with(crate::http::request_id::span))
        .layer(axum::middleware::from_fn(crate::http::request_id::middleware))
        .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("x-api-key"),
        ]))
}

/// When a call must be answered: the server's limit, shortened by the client's `grpc-timeout`
/// and by a protocol's own timeout field (`requested`).
pub fn deadline(state: &AppState, metadata: &tonic::metadata::MetadataMap, requested: Option<Duration>) -> Instant {
    state.runtime.deadline(grpc_timeout(metadata).into_iter().chain(requested))
}

/// The `grpc-timeout` header: an integer of at most 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A call's memory hold, already counting its decoded message (`bytes` long on the wire).
pub fn hold_for(state: &AppState, bytes: usize) -> Result<aiserve_runtime::budget::Hold, Error> {
    let hold = state.budget.hold();
    hold.grow(bytes, "the request message")?;
    Ok(hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&m), None);
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("10u", Duration::from_micros(10)),
            ("7n", Duration::from_nanos(7)),
        ] {
            m.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&m), Some(d), "{v}");
        }
        for bad in ["", "S", "123456789S", "5x", "-1S"] {
            m.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&m), None, "{bad:?}");
        }
    }
}
