//! KServe v2 over gRPC with a real HTTP/2 connection and tonic's generated client: health,
//! metadata, config, infer with raw and typed tensors (images and texts), every error class as
//! its gRPC code, stream infer (one answer per request, generation streamed with Triton's final
//! flag, errors that keep the stream open), statistics, keys, health checking and UNIMPLEMENTED.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use super::fake::{write_embedder, Harness};
use super::fake_generator::write_generator;
use crate::auth::{Auth, KeyLimits};
use crate::grpc::pb::inference as pb;
use crate::grpc::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::http::state::AppState;
use crate::listen::{ListenOptions, Wire};

type Client = GrpcInferenceServiceClient<Channel>;

pub(super) struct Grpc {
    pub addr: SocketAddr,
    /// Sends the shutdown; dropping it (at the end of a test) stops the server too.
    pub stop: Option<oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves the gRPC app of `state` on a free loopback port (HTTP/2, clear text).
pub(super) async fn serve(state: AppState) -> Grpc {
    serve_with(state, ListenOptions::default()).await
}

/// The same with these listener options (TLS, timeouts).
pub(super) async fn serve_with(state: AppState, opts: ListenOptions) -> Grpc {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let app = crate::grpc::app(state);
    let server = tokio::spawn(crate::listen::serve_wire(listener, app, opts, Wire::Http2(Default::default()), async {
        let _ = rx.await;
    }));
    Grpc { addr, stop: Some(stop), server }
}

async fn client(g: &Grpc) -> Client {
    GrpcInferenceServiceClient::connect(format!("http://{}", g.addr)).await.unwrap()
}

pub(super) async fn harness() -> Harness {
    let h = Harness::new().await;
    write_generator(h.repo(), "gen", 1, "");
    write_embedder(h.repo(), "emb", 1, 16);
    h.poll().await;
    h
}

fn image_input(shape: Vec<i64>) -> pb::model_infer_request::InferInputTensor {
    pb::model_infer_request::InferInputTensor {
        name: "image".into(),
        datatype: "FP32".into(),
        shape,
        ..Default::default()
    }
}

pub(super) fn le_f32(v: &[f32]) -> prost::bytes::Bytes {
    v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()
}

pub(super) fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

pub(super) fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Two images: one of 2/9 everywhere (label 2), one of ones (label 9).
pub(super) fn two_images() -> Vec<f32> {
    let mut v = vec![2.0f32 / 9.0; 784];
    v.extend(vec![1.0f32; 784]);
    v
}

#[tokio::test]
async fn health_metadata_and_config() {
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = |name: &str, version: &str| pb::ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(c.model_ready(ready("digits", "")).await.unwrap().into_inner().ready);
    assert!(c.model_ready(ready("digits", "1")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("digits", "7")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("nope", "")).await.unwrap().into_inner().ready);
    let md = c.server_metadata(pb::ServerMetadataRequest {}).await.unwrap();
    assert_eq!(md.metadata().get("x-request-id").unwrap().len(), 36, "a fresh id when the client sends none");
    assert_eq!(md.into_inner().name, "aiserve");
    let mut traced = tonic::Request::new(pb::ServerMetadataRequest {});
    traced.metadata_mut().insert("x-request-id", "trace-42".parse().unwrap());
    let md = c.server_metadata(traced).await.unwrap();
    assert_eq!(md.metadata().get("x-request-id").unwrap(), "trace-42", "the client's id is kept");
    let md = c
        .model_metadata(pb::ModelMetadataRequest { name: "digits".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((md.name.as_str(), md.versions.as_slice()), ("digits", ["1".to_string()].as_slice()));
    assert_eq!((md.inputs[0].name.as_str(), md.inputs[0].shape.as_slice()), ("image", [-1, 28, 28, 1].as_slice()));
    assert_eq!(md.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["probabilities", "label"]);
    let err = c.model_metadata(pb::ModelMetadataRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(err.unwrap_err().code(), Code::NotFound);

    let cfg = |name: &str| pb::ModelConfigRequest { name: name.into(), version: String::new() };
    let config = c.model_config(cfg("digits")).await.unwrap().into_inner().config.unwrap();
    assert_eq!(config.max_batch_size, 64);
    assert_eq!(config.input[0].dims, [28, 28, 1], "dims leave out the batch dimension");
    assert_eq!(config.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(config.output[1].data_type, pb::DataType::TypeInt64 as i32);
    assert_eq!(config.instance_group[0].count, 1);
    assert!(matches!(config.scheduling_choice, Some(pb::model_config::SchedulingChoice::DynamicBatching(_))));
    assert!(!config.model_transaction_policy.unwrap().decoupled);
    let config = c.model_config(cfg("gen")).await.unwrap().into_inner().config.unwrap();
    assert_eq!(config.max_batch_size, 0);
    assert!(config.model_transaction_policy.unwrap().decoupled, "generation answers decoupled");
    assert_eq!(config.input[0].data_type, pb::DataType::TypeString as i32);
    let config = c.model_config(cfg("emb")).await.unwrap().into_inner().config.unwrap();
    assert_eq!(config.output[0].dims, [4]);
}

#[tokio::test]
async fn infer_with_raw_and_typed_tensors() {
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    let raw = pb::ModelInferRequest {
        model_name: "digits".into(),
        id: "req-1".into(),
        inputs: vec![image_input(vec![2, 784])],
        raw_input_contents: vec![le_f32(&two_images())],
        ..Default::default()
    };
    let r = c.model_infer(raw).await.unwrap().into_inner();
    assert_eq!((r.model_name.as_str(), r.model_version.as_str(), r.id.as_str()), ("digits", "1", "req-1"));
    assert_eq!(r.outputs[0].name, "probabilities");
    assert_eq!((r.outputs[0].datatype.as_str(), r.outputs[0].shape.as_slice()), ("FP32", [2, 10].as_slice()));
    assert_eq!((r.outputs[1].datatype.as_str(), r.outputs[1].shape.as_slice()), ("INT64", [2].as_slice()));
    assert_eq!(f32s(&r.raw_output_contents[0]).len(), 20);
    assert_eq!(i64s(&r.raw_output_contents[1]), [2, 9]);

    // Typed contents, a nested shape, one output asked for, the version named.
    let mut input = image_input(vec![2, 28, 28, 1]);
    input.contents = Some(pb::InferTensorContents { fp32_contents: two_images(), ..Default::default() });
    let typed = pb::ModelInferRequest {
        model_name: "digits".into(),
        model_version: "1".into(),
        inputs: vec![input],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "label".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = c.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(i64s(&r.raw_output_contents[0]), [2, 9]);

    // Texts in as BYTES (raw, length-prefixed; and typed), vectors out.
    let texts = crate::kserve::tensor::bytes_elements([b"hello".as_slice(), b"world wide".as_slice()]);
    let text_input = pb::model_infer_request::InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape: vec![2],
        ..Default::default()
    };
    let req = pb::ModelInferRequest {
        model_name: "emb".into(),
        inputs: vec![text_input.clone()],
        raw_input_contents: vec![texts.into()],
        ..Default::default()
    };
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!((r.outputs[0].name.as_str(), r.outputs[0].shape.as_slice()), ("embedding", [2, 4].as_slice()));
    let raw_vectors = f32s(&r.raw_output_contents[0]);
    let mut typed_input = text_input;
    typed_input.contents = Some(pb::InferTensorContents {
        bytes_contents: vec![b"hello".as_slice().into(), b"world wide".as_slice().into()],
        ..Default::default()
    });
    let req = pb::ModelInferRequest { model_name: "emb".into(), inputs: vec![typed_input], ..Default::default() };
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(f32s(&r.raw_output_contents[0]), raw_vectors, "raw and typed texts embed alike");
}

#[tokio::test]
async fn errors_map_to_grpc_codes_naming_the_field() {
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    let req = |inputs, raw| pb::ModelInferRequest {
        model_name: "digits".into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    };
    let cases: Vec<(pb::ModelInferRequest, Code, &str)> = vec![
        (req(vec![image_input(vec![1, 784])], vec![]), Code::InvalidArgument, "no data"),
        (req(vec![image_input(vec![1, 784])], vec![vec![0u8; 7].into()]), Code::InvalidArgument, "whole number"),
        (
            req(vec![image_input(vec![1, 784])], vec![vec![0u8; 3136].into(), vec![0u8; 4].into()]),
            Code::InvalidArgument,
            "raw_input_contents",
        ),
        (req(vec![image_input(vec![1, 27, 28])], vec![vec![0u8; 27 * 28 * 4].into()]), Code::InvalidArgument, "shape"),
        (
            req(
                vec![pb::model_infer_request::InferInputTensor {
                    name: "pixels".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 784],
                    ..Default::default()
                }],
                vec![vec![0u8; 3136].into()],
            ),
            Code::InvalidArgument,
            "unknown input `pixels`",
        ),
        (
            req(
                vec![pb::model_infer_request::InferInputTensor {
                    name: "image".into(),
                    datatype: "FP99".into(),
                    shape: vec![1, 784],
                    ..Default::default()
                }],
                vec![vec![0u8; 3136].into()],
            ),
            Code::InvalidArgument,
            "inputs[0].datatype",
        ),
        (pb::ModelInferRequest { model_name: "nope".into(), ..Default::default() }, Code::NotFound, "nope"),
        (
            pb::ModelInferRequest {
                model_name: "gen".into(),
                inputs: vec![image_input(vec![1])],
                raw_input_contents: vec![vec![0u8; 4].into()],
                ..Default::default()
            },
            Code::InvalidArgument,
            "ModelStreamInfer",
        ),
    ];
    for (request, code, text) in cases {
        let err = c.model_infer(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(text), "{:?} should mention {text:?}", err.message());
    }
    // Typed contents of the wrong type, and both forms at once.
    let mut input = image_input(vec![1, 784]);
    input.contents = Some(pb::InferTensorContents { int64_contents: vec![0; 784], ..Default::default() });
    let err = c.model_infer(req(vec![input.clone()], vec![])).await.unwrap_err();
    assert!(err.message().contains("int64_contents"), "{}", err.message());
    let err = c.model_infer(req(vec![input], vec![vec![0u8; 3136].into()])).await.unwrap_err();
    assert!(err.message().contains("both"), "{}", err.message());
    // A message over the body limit is refused before it is decoded; the server stays up.
    let big = req(vec![image_input(vec![4096, 784])], vec![vec![0u8; 4096 * 3136].into()]);
    let err = c.model_infer(big).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
}

/// Text pieces and the final flag of every response to one stream request.
fn pieces(responses: &[pb::ModelStreamInferResponse]) -> Vec<(String, bool)> {
    responses
        .iter()
        .map(|r| {
            assert_eq!(r.error_message, "");
            let ir = r.infer_response.as_ref().unwrap();
            let text =
                ir.raw_output_contents.first().map(|b| String::from_utf8(b[4..].to_vec()).unwrap()).unwrap_or_default();
            let last = match ir.parameters["triton_final_response"].parameter_choice {
                Some(pb::infer_parameter::ParameterChoice::BoolParam(b)) => b,
                _ => panic!("no final flag"),
            };
            (text, last)
        })
        .collect()
}

fn gen_request(id: &str, text: &str, stream: bool, params: &[(&str, i64)]) -> pb::ModelInferRequest {
    let bool_input = |name: &str| pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "BOOL".into(),
        shape: vec![1],
        ..Default::default()
    };
    let text_input = pb::model_infer_request::InferInputTensor {
        name: "text_input".into(),
        datatype: "BYTES".into(),
        shape: vec![1],
        ..Default::default()
    };
    pb::ModelInferRequest {
        model_name: "gen".into(),
        id: id.into(),
        inputs: vec![text_input, bool_input("stream")],
        raw_input_contents: vec![
            crate::kserve::tensor::bytes_elements([text.as_bytes()]).into(),
            vec![stream as u8].into(),
        ],
        parameters: params
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(*v)) },
                )
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn stream_infer_generates_decoupled_and_keeps_going_after_errors() {
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    let mut digits = pb::ModelInferRequest {
        model_name: "digits".into(),
        id: "img".into(),
        inputs: vec![image_input(vec![2, 784])],
        raw_input_contents: vec![le_f32(&two_images())],
        ..Default::default()
    };
    let requests = vec![
        gen_request("s", "ab", true, &[("max_tokens", 3)]),
        pb::ModelInferRequest { model_name: "nope".into(), id: "bad".into(), ..Default::default() },
        gen_request("w", "ab", false, &[("max_tokens", 4)]),
        std::mem::take(&mut digits),
    ];
    let mut stream = c.model_stream_infer(futures_util::stream::iter(requests)).await.unwrap().into_inner();
    let mut by_id: std::collections::HashMap<String, Vec<pb::ModelStreamInferResponse>> = Default::default();
    while let Some(r) = stream.message().await.unwrap() {
        let id = r.infer_response.as_ref().unwrap().id.clone();
        by_id.entry(id).or_default().push(r);
    }
    let streamed = pieces(&by_id["s"]);
    assert_eq!(streamed.iter().map(|p| p.0.as_str()).collect::<String>(), "cde");
    assert!(streamed.len() >= 2, "streamed as pieces: {streamed:?}");
    assert!(streamed.iter().rev().skip(1).all(|p| !p.1) && streamed.last().unwrap().1, "{streamed:?}");
    assert_eq!(pieces(&by_id["w"]), [("cdef".to_string(), true)]);
    assert!(by_id["bad"][0].error_message.contains("nope"), "{:?}", by_id["bad"]);
    let img = by_id["img"][0].infer_response.as_ref().unwrap();
    assert_eq!(i64s(&img.raw_output_contents[1]), [2, 9]);

    // The empty final response Triton's clients may ask for comes after the text.
    let mut req = gen_request("e", "ab", true, &[("max_tokens", 2)]);
    req.parameters.insert("triton_enable_empty_final_response".into(), crate::grpc::tensors::bool_param(true));
    let mut stream = c.model_stream_infer(futures_util::stream::iter(vec![req])).await.unwrap().into_inner();
    let mut all = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        all.push(r);
    }
    let p = pieces(&all);
    assert_eq!(p.last().unwrap(), &(String::new(), true), "{p:?}");
    assert_eq!(p.iter().map(|p| p.0.as_str()).collect::<String>(), "cd");
    // Unknown sampling fields are refused by name.
    let bad = gen_request("x", "ab", true, &[("beam_width", 2)]);
    let mut stream = c.model_stream_infer(futures_util::stream::iter(vec![bad])).await.unwrap().into_inner();
    let r = stream.message().await.unwrap().unwrap();
    assert!(r.error_message.contains("beam_width"), "{}", r.error_message);
}

#[tokio::test]
async fn statistics_count_what_ran() {
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    for _ in 0..3 {
        let req = pb::ModelInferRequest {
            model_name: "digits".into(),
            inputs: vec![image_input(vec![2, 784])],
            raw_input_contents: vec![le_f32(&two_images())],
            ..Default::default()
        };
        c.model_infer(req).await.unwrap();
    }
    let stats = c
        .model_statistics(pb::ModelStatisticsRequest { name: "digits".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner()
        .model_stats;
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!((s.name.as_str(), s.version.as_str()), ("digits", "1"));
    assert!(s.inference_count >= 6, "{s:?}");
    assert!(s.execution_count >= 1 && s.execution_count <= 3, "{s:?}");
    let inf = s.inference_stats.unwrap();
    assert!(inf.success.unwrap().count >= 3, "{inf:?}");
    assert!(inf.queue.unwrap().count >= 3 && inf.compute_infer.unwrap().count >= 3, "{inf:?}");
    assert!(s.last_inference > 0);
    assert!(!s.batch_stats.is_empty());
    let all = c.model_statistics(pb::ModelStatisticsRequest::default()).await.unwrap().into_inner().model_stats;
    assert!(all.len() >= 3, "every loaded version: {all:?}");
    let err = c.model_statistics(pb::ModelStatisticsRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(err.unwrap_err().code(), Code::NotFound);
}

/// `msg` with `key` in its metadata, as a bearer token or as `x-api-key`.
fn with_key<T>(key: Option<&str>, bearer: bool, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        if bearer {
            r.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        } else {
            r.metadata_mut().insert("x-api-key", k.parse().unwrap());
        }
    }
    r
}

#[tokio::test]
async fn keys_from_metadata_and_the_repository() {
    const INFER: &str = "infer-key-0123456789";
    const ADMIN: &str = "admin-key-0123456789";
    let mut h = harness().await;
    h.state.auth =
        Arc::new(Auth::from_text(&format!("{INFER} infer\n{ADMIN} admin,infer\n"), KeyLimits::default()).unwrap());
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    let md = || pb::ModelMetadataRequest { name: "digits".into(), version: String::new() };
    // Probes stay open; everything else needs a key.
    assert!(c.server_live(pb::ServerLiveRequest {}).await.is_ok());
    assert_eq!(c.model_metadata(with_key(None, true, md())).await.unwrap_err().code(), Code::Unauthenticated);
    let wrong = c.model_metadata(with_key(Some("wrong-key-0123456789"), true, md())).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(c.model_metadata(with_key(Some(INFER), true, md())).await.is_ok());
    assert!(c.model_metadata(with_key(Some(INFER), false, md())).await.is_ok());
    let index = || pb::RepositoryIndexRequest::default();
    let denied = c.repository_index(with_key(Some(INFER), true, index())).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{}", denied.message());
    let rows = c.repository_index(with_key(Some(ADMIN), true, index())).await.unwrap().into_inner().models;
    assert!(rows.iter().any(|r| r.name == "digits" && r.version == "1" && r.state == "READY"), "{rows:?}");
    let unload = pb::RepositoryModelUnloadRequest { model_name: "digits".into(), ..Default::default() };
    c.repository_model_unload(with_key(Some(ADMIN), true, unload)).await.unwrap();
    let ready = pb::ModelReadyRequest { name: "digits".into(), version: String::new() };
    assert!(!c.model_ready(with_key(Some(INFER), true, ready.clone())).await.unwrap().into_inner().ready);
    let load = pb::RepositoryModelLoadRequest { model_name: "digits".into(), ..Default::default() };
    c.repository_model_load(with_key(Some(ADMIN), true, load)).await.unwrap();
    assert!(c.model_ready(with_key(Some(INFER), true, ready)).await.unwrap().into_inner().ready);
    let load = pb::RepositoryModelLoadRequest { model_name: "nope".into(), ..Default::default() };
    assert_eq!(c.repository_model_load(with_key(Some(ADMIN), true, load)).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn rate_limits_and_the_concurrency_cap_are_resource_exhausted() {
    const LIMITED: &str = "limited-key-01234567";
    let mut h = harness().await;
    h.state.auth = Arc::new(Auth::from_text(&format!("{LIMITED} infer rps=1\n"), KeyLimits::default()).unwrap());
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    let md =
        || with_key(Some(LIMITED), true, pb::ModelMetadataRequest { name: "digits".into(), version: String::new() });
    c.model_metadata(md()).await.unwrap();
    let err = c.model_metadata(md()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.metadata().get("retry-after").is_some(), "says when to retry");
    assert!(err.message().contains("1 requests per second"), "{}", err.message());

    // The server-wide cap: with its one permit held, the next call is refused at once.
    let limits = aiserve_runtime::Limits { max_concurrent_requests: 1, ..Default::default() };
    let h = Harness::with_limits(limits).await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    let held = h.state.admission.admit(false).unwrap();
    let err = c.model_metadata(pb::ModelMetadataRequest { name: "digits".into(), version: String::new() }).await;
    assert_eq!(err.unwrap_err().code(), Code::ResourceExhausted);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready, "probes are exempt");
    drop(held);
    assert!(c.model_metadata(pb::ModelMetadataRequest { name: "digits".into(), version: String::new() }).await.is_ok());
}

#[tokio::test]
async fn health_checking_and_unimplemented_methods() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let channel = Channel::from_shared(format!("http://{}", g.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "ready", "inference.GRPCInferenceService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health.check(HealthCheckRequest { service: "other".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Triton's shared-memory calls, and services this server does not have.
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in ["/inference.GRPCInferenceService/SystemSharedMemoryStatus", "/other.Service/Call"] {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<pb::ServerLiveRequest, pb::ServerLiveResponse>::default();
        let err =
            grpc.unary(tonic::Request::new(pb::ServerLiveRequest {}), path.parse().unwrap(), codec).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}");
        assert!(err.message().contains(path), "{path}: {:?}", err.message());
    }
}

#[tokio::test]
async fn hostile_claims_are_refused_without_allocating() {
    use tower::ServiceExt;
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut c = client(&g).await;
    // Shapes that claim far more (or less) than the bytes that came.
    for shape in [vec![1i64 << 40, 784], vec![-1, 784], vec![i64::MAX, i64::MAX], vec![]] {
        let req = pb::ModelInferRequest {
            model_name: "digits".into(),
            inputs: vec![image_input(shape.clone())],
            raw_input_contents: vec![le_f32(&[0.0; 784])],
            ..Default::default()
        };
        let err = c.model_infer(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{shape:?}: {}", err.message());
    }
    // A BYTES element that claims 4 GiB.
    let req = pb::ModelInferRequest {
        model_name: "emb".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            ..Default::default()
        }],
        raw_input_contents: vec![u32::MAX.to_le_bytes().to_vec().into()],
        ..Default::default()
    };
    assert_eq!(c.model_infer(req).await.unwrap_err().code(), Code::InvalidArgument);
    // A frame that claims a 4 GiB message: refused on the claim, before reading it.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::MAX.to_be_bytes());
    frame.extend_from_slice(&[0; 64]);
    let call = axum::http::Request::post("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(axum::body::Body::from(frame))
        .unwrap();
    let resp = crate::grpc::app(h.state.clone()).oneshot(call).await.unwrap();
    let (head, body) = resp.into_parts();
    // The code is in the head (trailers-only) or, after a message, in the trailers.
    let trailers = http_body_util::BodyExt::collect(body).await.unwrap().trailers().cloned().unwrap_or_default();
    let status = head.headers.get("grpc-status").or(trailers.get("grpc-status")).cloned();
    let code: i32 = status.and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    assert!(code == Code::OutOfRange as i32 || code == Code::ResourceExhausted as i32, "{head:?} {trailers:?}");
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
}
