//! The gRPC side of `aiserve bench`: KServe v2 `ModelInfer` (raw tensor bytes, as
//! tritonclient.grpc sends them) and TF Serving `Predict` (`tensor_content`). By default each task
//! has its own HTTP/2 connection, as the HTTP side keeps one keep-alive connection per task;
//! `--grpc-connections N` multiplexes the tasks' calls over N connections, as one gRPC channel
//! does.
//!
//! The generated clients run over hyper's HTTP/2 connections directly, rather than
//! tonic's `Channel` (whose request buffer adds a task hop per call) or a pooled client: on a
//! 2-core machine the client shares the cores with the server, so a lighter client measures the
//! server rather than the load generator.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aiserve_server::grpc::pb::inference as kserve;
use aiserve_server::grpc::pb::tensorflow as tf;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::payload::{images_le, Protocol};

/// One request, built once and cloned per call.
#[derive(Clone)]
pub enum Request {
    Kserve(kserve::ModelInferRequest),
    Tf(tf::serving::PredictRequest),
}

impl Request {
    pub fn new(protocol: Protocol, model: &str, batch: usize) -> Self {
        let shape = [batch as i64, 28, 28, 1];
        match protocol {
            Protocol::TfservingGrpc => {
                let dim = shape.iter().map(|&size| tf::tensor_shape_proto::Dim { size, name: String::new() }).collect();
                let tensor = tf::TensorProto {
                    dtype: tf::DataType::DtFloat as i32,
                    tensor_shape: Some(tf::TensorShapeProto { dim, unknown_rank: false }),
                    tensor_content: images_le(batch).into(),
                    ..Default::default()
                };
                Self::Tf(tf::serving::PredictRequest {
                    model_spec: Some(tf::serving::ModelSpec { name: model.into(), ..Default::default() }),
                    inputs: [("image".to_owned(), tensor)].into(),
                    output_filter: Vec::new(),
                })
            }
            _ => Self::Kserve(kserve::ModelInferRequest {
                model_name: model.into(),
                inputs: vec![kserve::model_infer_request::InferInputTensor {
                    name: "image".into(),
                    datatype: "FP32".into(),
                    shape: shape.to_vec(),
                    ..Default::default()
                }],
                raw_input_contents: vec![images_le(batch).into()],
                ..Default::default()
            }),
        }
    }
}

/// Opens one HTTP/2 connection to `url` (tasks given the same one multiplex their calls on it).
pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    let origin: hyper::Uri = url.parse()?;
    let addr = origin.authority().map(|a| a.to_string()).ok_or_else(|| anyhow::anyhow!("--url needs host:port"))?;
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(Connection { send, origin })
}

/// An open HTTP/2 connection and the origin its calls name.
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<tonic::body::Body>,
    origin: hyper::Uri,
}

/// One task's loop: a request at a time on `conn` until the budget or the time runs out;
/// latencies of answers that hold outputs, and the gRPC code names of failures.
pub async fn task(
    conn: Connection,
    req: Request,
    budget: Arc<AtomicI64>,
    stop_at: Option<Instant>,
) -> (Vec<u64>, Vec<String>) {
    let (mut lat, mut fail) = (Vec::new(), Vec::new());
    let mut kserve_client = kserve::grpc_inference_service_client::GrpcInferenceServiceClient::with_origin(
        H2(conn.send.clone()),
        conn.origin.clone(),
    )
    .max_decoding_message_size(usize::MAX);
    let mut tf_client =
        tf::serving::prediction_service_client::PredictionServiceClient::with_origin(H2(conn.send), conn.origin)
            .max_decoding_message_size(usize::MAX);
    while budget.fetch_sub(1, Ordering::Relaxed) > 0 && stop_at.is_none_or(|t| Instant::now() < t) {
        let t0 = Instant::now();
        let ok = match &req {
            Request::Kserve(r) => kserve_client.model_infer(r.clone()).await.map(|r| !r.get_ref().outputs.is_empty()),
            Request::Tf(r) => tf_client.predict(r.clone()).await.map(|r| !r.get_ref().outputs.is_empty()),
        };
        match ok {
            Ok(true) => lat.push(t0.elapsed().as_micros() as u64),
            Ok(false) => fail.push("empty".into()),
            Err(s) => fail.push(format!("{:?}", s.code())),
        }
    }
    (lat, fail)
}

/// One HTTP/2 connection as the service tonic's generated clients call.
#[derive(Clone)]
struct H2(SendRequest<tonic::body::Body>);

impl tower::Service<hyper::Request<tonic::body::Body>> for H2 {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: hyper::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}
