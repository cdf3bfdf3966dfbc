//! `inference.GRPCInferenceService`: KServe v2 over gRPC, as Triton answers `tritonclient.grpc`.
//!
//! Health, metadata, config and statistics read the registry; `ModelInfer` decodes tensors
//! (`super::tensors`) and runs the same `crate::kserve::infer` as HTTP; `ModelStreamInfer` is in
//! `super::kserve_stream`; the repository calls share `crate::kserve::repository` with HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use aiserve_core::policy::VersionPolicy;
use aiserve_runtime::servable::{Kind, Servable};
use aiserve_runtime::Error;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::pb::inference as pb;
use super::pb::inference::grpc_inference_service_server::GrpcInferenceService;
use super::tensors;
use crate::error::grpc_status;
use crate::http::metrics::Served;
use crate::http::state::AppState;
use crate::kserve::{self, Datatype};

pub struct Kserve {
    state: AppState,
}

impl Kserve {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The servable for a model and an optional version (empty: the policy's choice).
pub(super) fn resolve(state: &AppState, model: &str, version: &str) -> Result<Arc<Servable>, Status> {
    let version = Some(version).filter(|v| !v.is_empty());
    state.registry.resolve(model, version).map_err(grpc_status)
}

/// A response that says which version answered (for the metrics and statistics).
pub(super) fn served<T>(message: T, servable: &Servable) -> Response<T> {
    let mut resp = Response::new(message);
    resp.extensions_mut().insert(Served::of(servable));
    resp
}

/// One `ModelInfer` on the version `msg` names: decode, run, encode.
pub(super) async fn infer(
    state: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    msg: pb::ModelInferRequest,
) -> Result<(Arc<Servable>, pb::ModelInferResponse), Error> {
    let version = Some(msg.model_version.as_str()).filter(|v| !v.is_empty());
    let servable = state.registry.resolve(&msg.model_name, version)?;
    let resp = infer_on(state, metadata, &servable, msg).await?;
    Ok((servable, resp))
}

/// One `ModelInfer` on an already resolved version.
pub(super) async fn infer_on(
    state: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    servable: &Servable,
    msg: pb::ModelInferRequest,
) -> Result<pb::ModelInferResponse, Error> {
    let hold = super::hold_for(state, msg.encoded_len())?;
    let timeout = kserve::timeout_parameter(&tensors::parameters_json(&msg.parameters))?;
    let deadline = super::deadline(state, metadata, timeout);
    let inputs = tensors::decode_inputs(msg.inputs, msg.raw_input_contents, &hold)?;
    let asked = (!msg.outputs.is_empty()).then(|| msg.outputs.into_iter().map(|o| o.name).collect());
    let outputs = kserve::infer(
        &state.runtime,
        servable,
        kserve::Request { inputs, outputs: asked, encoding: kserve::Encoding::Raw },
        &hold,
        deadline,
    )
    .await?;
    let (outputs, raw) = tensors::encode_outputs(outputs);
    Ok(pb::ModelInferResponse {
        model_name: servable.model.to_string(),
        model_version: servable.version.to_string(),
        id: msg.id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw,
    })
}

fn tensor_meta(list: Vec<kserve::TensorMeta>) -> Vec<pb::model_metadata_response::TensorMetadata> {
    list.into_iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype.to_owned(),
            shape: t.shape,
        })
        .collect()
}

/// Triton's config datatype for a KServe datatype name.
fn config_type(datatype: &str) -> i32 {
    let t = match Datatype::parse(datatype) {
        Some(Datatype::Bool) => pb::DataType::TypeBool,
        Some(Datatype::Uint8) => pb::DataType::TypeUint8,
        Some(Datatype::Uint16) => pb::DataType::TypeUint16,
        Some(Datatype::Uint32) => pb::DataType::TypeUint32,
        Some(Datatype::Uint64) => pb::DataType::TypeUint64,
        Some(Datatype::Int8) => pb::DataType::TypeInt8,
        Some(Datatype::Int16) => pb::DataType::TypeInt16,
        Some(Datatype::Int32) => pb::DataType::TypeInt32,
        Some(Datatype::Int64) => pb::DataType::TypeInt64,
        Some(Datatype::Fp16) => pb::DataType::TypeFp16,
        Some(Datatype::Fp32) => pb::DataType::TypeFp32,
        Some(Datatype::Fp64) => pb::DataType::TypeFp64,
        Some(Datatype::Bytes) => pb::DataType::TypeString,
        Some(Datatype::Bf16) => pb::DataType::TypeBf16,
        None => pb::DataType::TypeInvalid,
    };
    t as i32
}

/// The version's configuration as Triton reports it: what it takes and answers, how requests
/// are batched, how many instances run, which versions are served.
pub(super) fn model_config(state: &AppState, servable: &Servable) -> pb::ModelConfig {
    let cfg = state.registry.model_config(&servable.model).unwrap_or_default();
    let md = kserve::metadata(servable);
    // Image and embedding models batch requests along their first dimension (Triton's
    // `max_batch_size` > 0: dims leave it out); generation runs its own continuous batching.
    let (max_batch, batched) = match &servable.kind {
        Kind::Image(img) => (img.max_batch as i32, true),
        Kind::Embedder(_) => (state.limits.text.max_inputs.min(i32::MAX as usize) as i32, true),
        Kind::Generator(_) => (0, false),
        Kind::Graph(g) if g.info.batched => (g.max_batch.min(i32::MAX as usize) as i32, true),
        // A reranker's query is one text for all documents (or one each): no batch dimension.
        Kind::Graph(_) | Kind::Pipeline(_) | Kind::Scorer(_) => (0, false),
    };
    let dims = |shape: &[i64]| if batched { shape.get(1..).unwrap_or_default().to_vec() } else { shape.to_vec() };
    let input = md
        .inputs
        .iter()
        .map(|t| pb::ModelInput {
            name: t.name.clone(),
            data_type: config_type(t.datatype),
            format: if matches!(servable.kind, Kind::Image(_)) {
                pb::model_input::Format::Nhwc as i32
            } else {
                pb::model_input::Format::None as i32
            },
            dims: dims(&t.shape),
        })
        .collect();
    let output = md
        .outputs
        .iter()
        .map(|t| pb::ModelOutput {
            name: t.name.clone(),
            data_type: config_type(t.datatype),
            dims: dims(&t.shape),
            label_filename: String::new(),
        })
        .collect();
    let version_policy = pb::ModelVersionPolicy {
        policy_choice: Some(match &cfg.version_policy {
            VersionPolicy::Latest(n) => {
                pb::model_version_policy::PolicyChoice::Latest(pb::model_version_policy::Latest {
                    num_versions: (*n).min(u32::MAX as usize) as u32,
                })
            }
            VersionPolicy::All => pb::model_version_policy::PolicyChoice::All(pb::model_version_policy::All {}),
            VersionPolicy::Specific(v) => {
                pb::model_version_policy::PolicyChoice::Specific(pb::model_version_policy::Specific {
                    versions: v.iter().map(|v| v.0 as i64).collect(),
                })
            }
        }),
    };
    let instances = match &servable.kind {
        Kind::Generator(_) => 1,
        _ => cfg.instances.max(1),
    };
    let scheduling = batched.then(|| {
        pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            preferred_batch_size: cfg.preferred_batch_sizes.iter().map(|&b| b.min(i32::MAX as usize) as i32).collect(),
            max_queue_delay_microseconds: cfg.max_queue_delay_us,
            preserve_ordering: false,
        })
    });
    let mut parameters = HashMap::new();
    if let Some(p) = md.parameters.as_object() {
        for (k, v) in p {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            parameters.insert(k.clone(), pb::ModelParameter { string_value: text });
        }
    }
    pb::ModelConfig {
        name: servable.model.to_string(),
        platform: md.platform.to_owned(),
        backend: match &servable.kind {
            Kind::Graph(g) if g.info.platform != crate::kserve::PLATFORM => "onnxruntime",
            _ => "aiserve",
        }
        .to_owned(),
        version_policy: Some(version_policy),
        max_batch_size: max_batch,
        input,
        output,
        instance_group: vec![pb::ModelInstanceGroup {
            name: servable.model.to_string(),
            count: instances.min(i32::MAX as usize) as i32,
            kind: pb::model_instance_group::Kind::Cpu as i32,
        }],
        scheduling_choice: scheduling,
        parameters,
        model_transaction_policy: Some(pb::ModelTransactionPolicy {
            decoupled: matches!(servable.kind, Kind::Generator(_)),
        }),
    }
}

fn duration(t: &aiserve_runtime::stats::Tally) -> Option<pb::StatisticDuration> {
    let (count, ns) = t.get();
    Some(pb::StatisticDuration { count, ns })
}

/// The statistics of every loaded version matching `name` and `version` (empty: all).
fn statistics(state: &AppState, name: &str, version: &str) -> Result<Vec<pb::ModelStatistics>, Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let models = state.registry.statuses();
    if !name.is_empty() && !models.iter().any(|m| m.name.as_str() == name) {
        return Err(Error::ModelNotFound(name.to_owned()));
    }
    let mut out = Vec::new();
    for m in models.iter().filter(|m| name.is_empty() || m.name.as_str() == name) {
        for v in m.versions.iter().filter(|v| v.state == aiserve_core::state::VersionState::Available) {
            let ver = v.version.to_string();
            if !version.is_empty() && ver != version {
                continue;
            }
            // Retired between the two looks: it has nothing left to report.
            let Ok(servable) = state.registry.resolve(m.name.as_str(), Some(&ver)) else { continue };
            let s = servable.stats();
            let zero = Some(pb::StatisticDuration::default());
            out.push(pb::ModelStatistics {
                name: m.name.to_string(),
                version: ver,
                last_inference: s.last_inference_ms.load(Relaxed),
                inference_count: s.inference_count.load(Relaxed),
                execution_count: s.execution_count.load(Relaxed),
                inference_stats: Some(pb::InferStatistics {
                    success: duration(&s.success),
                    fail: duration(&s.fail),
                    queue: duration(&s.queue),
                    compute_input: zero,
                    compute_infer: duration(&s.compute),
                    compute_output: zero,
                    cache_hit: zero,
                    cache_miss: zero,
                }),
                batch_stats: s
                    .batches()
                    .into_iter()
                    .map(|(size, count, ns)| pb::InferBatchStatistics {
                        batch_size: size,
                        compute_input: zero,
                        compute_infer: Some(pb::StatisticDuration { count, ns }),
                        compute_output: zero,
                    })
                    .collect(),
            });
        }
    }
    if !version.is_empty() && out.is_empty() {
        return Err(Error::VersionNotFound {
            model: name.to_owned(),
            version: version.to_owned(),
            hint: String::new(),
        });
    }
    Ok(out)
}

#[tonic::async_trait]
impl GrpcInferenceService for Kserve {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.state.registry.is_ready() }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.get_ref();
        // As Triton does: an unknown model or version is simply not ready.
        let ready = resolve(&self.state, &r.name, &r.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "aiserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into(), "statistics".into(), "model_configuration".into()],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.get_ref();
        let servable = resolve(&self.state, &r.name, &r.version)?;
        let md = kserve::metadata(&servable);
        let versions = self.state.registry.available_versions(&r.name).iter().map(ToString::to_string).collect();
        Ok(served(
            pb::ModelMetadataResponse {
                name: servable.model.to_string(),
                versions,
                platform: md.platform.into(),
                inputs: tensor_meta(md.inputs),
                outputs: tensor_meta(md.outputs),
            },
            &servable,
        ))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (metadata, _, msg) = req.into_parts();
        let (servable, resp) = infer(&self.state, &metadata, msg).await.map_err(grpc_status)?;
        Ok(served(resp, &servable))
    }

    type ModelStreamInferStream = super::kserve_stream::ResponseStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Ok(Response::new(super::kserve_stream::start(self.state.clone(), req)))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.get_ref();
        let servable = resolve(&self.state, &r.name, &r.version)?;
        let config = model_config(&self.state, &servable);
        Ok(served(pb::ModelConfigResponse { config: Some(config) }, &servable))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = req.get_ref();
        let model_stats = statistics(&self.state, &r.name, &r.version).map_err(grpc_status)?;
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let rows = kserve::repository::index(&self.state.runtime, req.get_ref().ready).await.map_err(grpc_status)?;
        let models = rows
            .into_iter()
            .map(|r| pb::repository_index_response::ModelIndex {
                name: r.name,
                version: r.version,
                state: r.state.to_owned(),
                reason: r.reason.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = req.get_ref();
        if !r.parameters.is_empty() {
            // Triton takes `config` and file overrides here; this server loads what is on disk.
            return Err(grpc_status(Error::invalid(
                "parameters",
                "load parameters (config and file overrides) are not supported; change the repository instead",
            )));
        }
        kserve::repository::load(&self.state.runtime, &r.model_name).await.map_err(grpc_status)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        // `unload_dependents` is the only parameter Triton defines; there are no dependents here.
        kserve::repository::unload(&self.state.runtime, &req.get_ref().model_name).await.map_err(grpc_status)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}
