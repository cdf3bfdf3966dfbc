//! The gRPC listener on real sockets: TLS with ALPN `h2`, deadlines from `grpc-timeout`, the
//! request metrics' `grpc` protocol, reflection, a shutdown that lets an open stream finish, and
//! GOAWAY on the open connections when draining begins.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::fake::write_version;
use super::grpc_kserve::{harness, le_f32, serve, serve_with, two_images};
use crate::grpc::pb::inference as pb;
use crate::grpc::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::listen::ListenOptions;

#[tokio::test]
async fn tls_negotiates_h2_and_serves_calls() {
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = super::fake::self_signed(dir.path());
    let tls = crate::listen::tls_config(&cert_path, &key_path).unwrap();
    let h = harness().await;
    let g = serve_with(h.state.clone(), ListenOptions { tls: Some(tls), ..Default::default() }).await;
    let addr = g.addr;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let (alpn_tx, alpn_rx) = std::sync::mpsc::channel();
    let connect = tower::service_fn(move |_: axum::http::Uri| {
        let (connector, alpn_tx) = (connector.clone(), alpn_tx.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = connector.connect("localhost".try_into().unwrap(), tcp).await?;
            let _ = alpn_tx.send(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_static("https://localhost").connect_with_connector(connect).await.unwrap();
    assert_eq!(alpn_rx.recv().unwrap().as_deref(), Some(b"h2".as_slice()), "the server picks h2 by ALPN");
    let mut c = GrpcInferenceServiceClient::new(channel);
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    let md = pb::ModelMetadataRequest { name: "digits".into(), version: String::new() };
    assert_eq!(c.model_metadata(md).await.unwrap().into_inner().name, "digits");
}

#[tokio::test]
async fn grpc_timeout_is_the_deadline_and_calls_are_counted() {
    let h = harness().await;
    write_version(h.repo(), "slow", 1, "sleep 400");
    h.poll().await;
    let g = serve(h.state.clone()).await;
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{}", g.addr)).await.unwrap();
    let req = |model: &str| pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: vec![2, 784],
            ..Default::default()
        }],
        raw_input_contents: vec![le_f32(&two_images())],
        ..Default::default()
    };
    // Sent without a client (tonic's would give up at the deadline itself): the server must
    // answer DEADLINE_EXCEEDED at the deadline, not when the model finishes.
    let message = prost::Message::encode_to_vec(&req("slow"));
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let call = axum::http::Request::post("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "50m")
        .body(axum::body::Body::from(framed))
        .unwrap();
    let t = std::time::Instant::now();
    let resp = tower::ServiceExt::oneshot(crate::grpc::app(h.state.clone()), call).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], (Code::DeadlineExceeded as i32).to_string().as_str(), "{resp:?}");
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "answered at the deadline, not after the model: {:?}",
        t.elapsed()
    );
    c.model_infer(req("digits")).await.unwrap();
    let text = String::from_utf8(aiserve_runtime::metrics::render_text(Vec::new())).unwrap();
    let ok = text.lines().any(|l| {
        l.starts_with("aiserve_requests_total{")
            && l.contains(r#"model="digits""#)
            && l.contains(r#"protocol="grpc""#)
            && l.contains(r#"status="OK""#)
    });
    assert!(ok, "a gRPC infer is counted with protocol=\"grpc\" and its code name");
    assert!(text.contains(r#"protocol="grpc",status="DEADLINE_EXCEEDED""#), "failures carry their code");
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let channel = Channel::from_shared(format!("http://{}", g.addr)).unwrap().connect().await.unwrap();
    let mut r = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = r.server_reflection_info(futures_util::stream::iter(vec![ask])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("a service list was expected")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish() {
    let h = harness().await;
    super::fake_generator::write_generator(h.repo(), "slowgen", 1, "sleep 30");
    h.poll().await;
    let mut g = serve(h.state.clone()).await;
    let addr = g.addr;
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut c = GrpcInferenceServiceClient::new(channel);
    let text = crate::kserve::tensor::bytes_elements([b"ab".as_slice()]);
    let req = pb::ModelInferRequest {
        model_name: "slowgen".into(),
        inputs: vec![
            pb::model_infer_request::InferInputTensor {
                name: "text_input".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            },
            pb::model_infer_request::InferInputTensor {
                name: "stream".into(),
                datatype: "BOOL".into(),
                shape: vec![1],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![text.into(), vec![1u8].into()],
        parameters: [(
            "max_tokens".to_owned(),
            pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(6)) },
        )]
        .into(),
        ..Default::default()
    };
    // The request stream stays open (as a client's stream does) until the answers are in.
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(1);
    req_tx.send(req).await.unwrap();
    let requests = futures_util::stream::unfold(req_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut stream = c.model_stream_infer(requests).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.error_message, "");
    g.stop.take().unwrap().send(()).unwrap();
    let mut last_final = false;
    let mut texts = 1;
    while let Some(r) = stream.message().await.unwrap() {
        let ir = r.infer_response.unwrap();
        last_final = matches!(
            ir.parameters["triton_final_response"].parameter_choice,
            Some(pb::infer_parameter::ParameterChoice::BoolParam(true))
        );
        texts += 1;
        if last_final {
            break;
        }
    }
    assert!(last_final, "the stream ran to its final response after shutdown began ({texts} responses)");
    drop(req_tx);
    drop(stream);
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), g.server)
        .await
        .expect("the server drained and returned")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let h = harness().await;
    let opts = ListenOptions { header_timeout: Duration::from_millis(200), ..Default::default() };
    let g = serve_with(h.state.clone(), opts).await;
    let addr = g.addr;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("closed, not left open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live, "clients that speak are served");
}

#[tokio::test]
async fn draining_sends_goaway_while_new_connections_are_still_served() {
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::listen::serve_wire_draining(
        listener,
        crate::grpc::app(h.state.clone()),
        ListenOptions::default(),
        crate::listen::Wire::Http2(Default::default()),
        async {
            let _ = drain_rx.await;
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    // A connection opened before draining begins ...
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, axum::body::Body>(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // One answered request: the server has accepted the connection.
    let req = axum::http::Request::get(format!("http://{addr}/")).body(axum::body::Body::empty()).unwrap();
    sender.send_request(req).await.unwrap();
    drain_tx.send(()).unwrap();
    // ... is told to go away: with no stream open, it ends.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("GOAWAY ended the idle connection")
        .unwrap()
        .unwrap();
    // New connections are still accepted and served until the shutdown.
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    drop(c);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server returned").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections after shutdown");
}
