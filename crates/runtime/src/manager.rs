//! The version manager: polls the repository and moves the live set towards the policy.
//!
//! Each poll first syncs the local mirror of a repository on object storage (when there is
//! one, [`RepoSource`]), then scans the repository on a blocking thread, asks
//! `aiserve_core::plan` what to do for every model, loads new versions (on the blocking pool:
//! read weights, warm up with one forward pass, start the model thread), and only then plans
//! again to retire versions that left the desired set, so a model keeps serving throughout a
//! swap. A retiring version waits until no
//! request holds it before it is dropped. Load failures are recorded on the version and never
//! stop the server or other versions.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiserve_core::config::ModelConfig;
use aiserve_core::generate::GenItem;
use aiserve_core::plan::{plan, Action};
use aiserve_core::repository::{self, RepoScan};
use aiserve_core::tensor::ImageSpec;
use aiserve_core::{Description, ImageBatch, Loaded, ModelLoader, ModelName, Version};

use crate::generation::engine::{Engine, EngineConfig};
use crate::generation::GenModel;
use crate::graph::{Graph, GraphRunner};
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::scorer::{ScoreModel, ScoreRunner};
use crate::servable::{EmbedModel, EmbedRunner, ImageModel, ImageRunner, Kind, Servable};
use crate::source::RepoSource;
use crate::worker::{BatchUnit, Queue, Runner};

pub struct Manager {
    pub repo: PathBuf,
    pub loader: Arc<dyn ModelLoader>,
    pub registry: Arc<Registry>,
    /// Models an administrator unloaded (KServe repository API): kept unloaded until loaded.
    unloaded: std::sync::Mutex<BTreeSet<ModelName>>,
    /// One scan-plan-act round at a time (the poller and administrator requests share it).
    round: tokio::sync::Mutex<()>,
    /// Engine limits of text generation versions.
    generation: EngineConfig,
    /// The remote repository that `repo` mirrors, if any.
    source: Option<Arc<dyn RepoSource>>,
}

impl Manager {
    pub fn new(repo: PathBuf, loader: Arc<dyn ModelLoader>, registry: Arc<Registry>) -> Self {
        Self {
            repo,
            loader,
            registry,
            unloaded: Default::default(),
            round: Default::default(),
            generation: EngineConfig::default(),
            source: None,
        }
    }

    /// Mirrors `source` into `repo` at the start of every round.
    pub fn with_source(mut self, source: Arc<dyn RepoSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Brings the mirror of a remote repository up to date (nothing for a local one). A failed
    /// sync is logged and counted; the round goes on with the mirror as it was.
    async fn sync(&self) {
        let Some(source) = &self.source else { return };
        let syncs = &crate::metrics::METRICS.repository_syncs;
        match source.sync().await {
            Ok(report) => {
                syncs.with_label_values(&["ok"]).inc();
                if report != Default::default() {
                    tracing::info!(
                        repo = source.location(),
                        downloaded = report.downloaded,
                        removed = report.removed,
                        failed = report.failed,
                        "repository mirror synced"
                    );
                }
            }
            Err(e) => {
                syncs.with_label_values(&["failed"]).inc();
                tracing::warn!(repo = source.location(), error = %e, "cannot list the remote repository; serving what is mirrored");
            }
        }
    }

    pub fn with_generation(mut self, generation: EngineConfig) -> Self {
        self.generation = generation;
        self
    }

    fn is_unloaded(&self, model: &ModelName) -> bool {
        self.unloaded.lock().unwrap_or_else(|p| p.into_inner()).contains(model)
    }

    pub fn unloaded_models(&self) -> BTreeSet<ModelName> {
        self.unloaded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Scans the repository on the blocking pool (an unreadable repository scans as empty).
    pub async fn scan(&self) -> Option<RepoScan> {
        let repo = self.repo.clone();
        match tokio::task::spawn_blocking(move || repository::scan(&repo)).await {
            Ok(Ok(scan)) => Some(scan),
            Ok(Err(e)) => {
                tracing::warn!(repo = %self.repo.display(), error = %e, "cannot read the model repository");
                Some(RepoScan::default())
            }
            Err(e) => {
                tracing::error!(error = %e, "repository scan panicked");
                None
            }
        }
    }

    /// Loads a model now (KServe `repository/models/{m}/load`): clears an earlier unload,
    /// reconciles it with the repository, and answers whether a version is serving.
    pub async fn load_model(&self, model: &ModelName) -> Result<(), String> {
        let _round = self.round.lock().await;
        self.unloaded.lock().unwrap_or_else(|p| p.into_inner()).remove(model);
        self.sync().await;
        let scan = self.scan().await.ok_or("the repository scan failed")?;
        if !scan.models.contains_key(model) {
            return Err(format!("model `{model}` is not in the repository"));
        }
        self.reconcile(model, &scan).await;
        let status = self.registry.status(model.as_str());
        let versions = status.map(|s| s.versions).unwrap_or_default();
        if versions.iter().any(|v| v.state == aiserve_core::state::VersionState::Available) {
            return Ok(());
        }
        Err(match versions.iter().rev().find_map(|v| v.error.clone()) {
            Some(e) => format!("model `{model}` failed to load: {e}"),
            None => format!("model `{model}` has no version to load under its version policy"),
        })
    }

    /// Unloads every version of a model (KServe `repository/models/{m}/unload`) and keeps it
    /// unloaded until it is loaded again; in-flight requests finish first.
    pub async fn unload_model(&self, model: &ModelName) -> Result<(), String> {
        let _round = self.round.lock().await;
        let scan = self.scan().await.ok_or("the repository scan failed")?;
        if !scan.models.contains_key(model) && self.registry.status(model.as_str()).is_none() {
            return Err(format!("model `{model}` is not in the repository"));
        }
        self.unloaded.lock().unwrap_or_else(|p| p.into_inner()).insert(model.clone());
        self.reconcile(model, &scan).await;
        Ok(())
    }

    /// Polls every `interval` until `shutdown` resolves.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.poll_once().await;
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One scan-plan-act round. Public so tests can drive the manager step by step.
    pub async fn poll_once(&self) {
        let _round = self.round.lock().await;
        self.sync().await;
        let Some(scan) = self.scan().await else { return };
        for (path, why) in &scan.skipped {
            tracing::debug!(path = %path.display(), why, "skipped repository entry");
        }
        let mut names = self.registry.model_names();
        names.extend(scan.models.keys().cloned());
        // Pipelines last: their steps' models must be up before they load.
        let pipeline = |m: &ModelName| {
            let cfg = scan.models.get(m).and_then(|f| f.config.as_ref().ok()).cloned();
            cfg.or_else(|| self.registry.model_config(m)).is_some_and(|c| c.pipeline.is_some())
        };
        names.sort();
        names.dedup();
        names.sort_by_key(|m| pipeline(m));
        for model in names {
            self.reconcile(&model, &scan).await;
        }
        self.registry.mark_initial_poll_done();
    }

    async fn reconcile(&self, model: &ModelName, scan: &RepoScan) {
        let found = scan.models.get(model);
        if let Some(found) = found {
            if let Err(e) = &found.config {
                tracing::warn!(%model, error = %e, "model config is invalid; keeping what is loaded");
                self.registry.set_config(model, found.config.clone());
                return;
            }
            self.registry.set_config(model, found.config.clone());
        }
        let config = self.registry.model_config(model).unwrap_or_else(ModelConfig::new_default);
        // An unloaded model is planned as if it had no versions on disk: everything retires.
        // A pipeline that failed is tried again once the models its steps run change (one that
        // was missing arrives): their versions count in its fingerprint.
        let steps = config.pipeline.as_ref().map_or(0, |p| self.steps_fingerprint(p));
        let on_disk = match found {
            Some(f) if !self.is_unloaded(model) => {
                f.versions.iter().map(|(v, d)| (*v, d.fingerprint ^ steps)).collect()
            }
            _ => Default::default(),
        };

        for action in plan(&config.version_policy, &on_disk, &self.registry.live(model)) {
            if let Action::Load(v) = action {
                let dir = found.and_then(|f| f.versions.get(&v)).expect("plan loads only versions on disk");
                self.load(model, v, dir.path.clone(), dir.fingerprint ^ steps, &config).await;
            }
        }
        // Plan again now that new versions are up: only then retire the old ones.
        for action in plan(&config.version_policy, &on_disk, &self.registry.live(model)) {
            match action {
                Action::Load(_) => {}
                Action::Unload(v) => self.unload(model, v),
                Action::Forget(v) => self.registry.forget(model, v),
            }
        }
        if found.is_none() {
            self.registry.forget_model_if_empty(model);
        }
    }

    /// What a pipeline's step models are now: each one's available version and when it loaded.
    fn steps_fingerprint(&self, p: &aiserve_core::pipeline::PipelineConfig) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (m, v) in p.steps.iter().filter_map(|s| Some((s.model.as_ref()?, s.version))) {
            m.hash(&mut h);
            match self.registry.resolve(m, v.map(|v| v.to_string()).as_deref()) {
                Ok(s) => (s.version.to_string(), s.loaded_at).hash(&mut h),
                Err(_) => "unavailable".hash(&mut h),
            }
        }
        h.finish()
    }

    async fn load(&self, model: &ModelName, version: Version, dir: PathBuf, fingerprint: u64, cfg: &ModelConfig) {
        self.registry.set_loading(model, version, fingerprint);
        let loader = self.loader.clone();
        let (name, cfg, generation) = (model.clone(), cfg.clone(), self.generation.clone());
        let started = Instant::now();
        let registry = self.registry.clone();
        let result =
            tokio::task::spawn_blocking(move || build(&*loader, &registry, name, version, &dir, &cfg, &generation))
                .await
                .unwrap_or_else(|_| Err("the loader panicked".into()));
        match result {
            Ok(servable) => {
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(%model, %version, seconds, "version available");
                let v = version.to_string();
                crate::metrics::METRICS.load_seconds.with_label_values(&[model.as_str(), &v]).set(seconds);
                self.registry.set_available(Arc::new(servable));
            }
            Err(e) => {
                tracing::warn!(%model, %version, error = %e, "version failed to load");
                self.registry.set_failed(model, version, e);
            }
        }
    }

    fn unload(&self, model: &ModelName, version: Version) {
        let Some(servable) = self.registry.begin_unload(model, version) else {
            self.registry.set_ended(model, version);
            return;
        };
        tracing::info!(%model, %version, "unloading version");
        let registry = self.registry.clone();
        let model = model.clone();
        tokio::spawn(async move {
            // In-flight requests hold their own Arc; wait for them before dropping the model.
            while Arc::strong_count(&servable) > 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(servable);
            registry.set_ended(&model, version);
            crate::metrics::forget_version(model.as_str(), &version.to_string());
            tracing::info!(%model, %version, "version unloaded");
        });
    }
}

/// Describes the version, loads and warms up one copy per instance, and starts its queue.
fn build(
    loader: &dyn ModelLoader,
    registry: &Registry,
    model: ModelName,
    version: Version,
    dir: &std::path::Path,
    cfg: &ModelConfig,
    generation: &EngineConfig,
) -> Result<Servable, String> {
    if let Some(p) = &cfg.pipeline {
        let kind = Kind::Pipeline(Pipeline::load(&model, version, dir, p, registry)?);
        return Ok(Servable { model, version, kind, loaded_at: std::time::SystemTime::now() });
    }
    let description = loader.describe(dir, cfg).map_err(|e| e.to_string())?;
    // One engine per generation version: continuous batching already fills the cores, and a
    // second copy would only split the KV cache budget.
    let instances = if matches!(description, Description::Generator(_)) { 1 } else { cfg.instances };
    let mut copies = Vec::with_capacity(instances);
    for _ in 0..instances {
        let mut loaded = loader.load(dir, &description).map_err(|e| e.to_string())?;
        guarded("warm-up", || warm_up(&mut loaded, &description))?;
        copies.push(loaded);
    }
    let (name, v) = (model.to_string(), version.to_string());
    let kind = match description {
        Description::Image(config) => {
            let runners = same_kind(copies, |c| match c {
                Loaded::Image(m) => Some(ImageRunner(m)),
                _ => None,
            })?;
            let queue =
                Queue::start(&name, &v, runners, cfg.batch_policy(), BatchUnit::Images).map_err(|e| e.to_string())?;
            let spec = ImageSpec::from(&config.input);
            Kind::Image(ImageModel { config, spec, max_batch: cfg.max_batch_size, queue })
        }
        Description::Embedder { info, tokenizer } => {
            let runners = same_kind(copies, |c| match c {
                Loaded::Embedder(m) => Some(EmbedRunner(m)),
                _ => None,
            })?;
            let (queue, max_batch_tokens) = token_queue(&name, &v, runners, cfg, info.max_tokens)?;
            Kind::Embedder(EmbedModel { info, tokenizer, max_batch_tokens, queue })
        }
        Description::Scorer { info, tokenizer } => {
            let runners = same_kind(copies, |c| match c {
                Loaded::Scorer(m) => Some(ScoreRunner(m)),
                _ => None,
            })?;
            let (queue, max_batch_tokens) = token_queue(&name, &v, runners, cfg, info.max_tokens)?;
            Kind::Scorer(ScoreModel { info, tokenizer, max_batch_tokens, queue })
        }
        Description::Generator(spec) => {
            let generator = same_kind(copies, |c| match c {
                Loaded::Generator(m) => Some(m),
                _ => None,
            })?
            .pop()
            .ok_or("no instance was loaded")?;
            let engine = Engine::start(&name, &v, generator, spec, generation.clone()).map_err(|e| e.to_string())?;
            Kind::Generator(GenModel::new(engine))
        }
        Description::Graph(info) => {
            let outputs = info.outputs.len();
            let batched = info.batched;
            let runners = same_kind(copies, |c| match c {
                Loaded::Graph(model) => Some(GraphRunner { model, batched, outputs }),
                _ => None,
            })?;
            let mut policy = cfg.batch_policy();
            if !batched {
                policy.max_batch_size = 1;
                policy.preferred_batch_sizes.clear();
            }
            let max_batch = policy.max_batch_size;
            let queue = Queue::start(&name, &v, runners, policy, BatchUnit::Rows).map_err(|e| e.to_string())?;
            Kind::Graph(Graph { info, max_batch, queue })
        }
    };
    Ok(Servable { model, version, kind, loaded_at: std::time::SystemTime::now() })
}

/// The queue of a text model batched by tokens, and the most tokens one forward pass takes:
/// `max_batch_tokens`, raised so that every text the model accepts (`max_tokens`) fits one pass
/// however long its limit.
fn token_queue<R: Runner>(
    name: &str,
    version: &str,
    runners: Vec<R>,
    cfg: &ModelConfig,
    max_tokens: usize,
) -> Result<(Queue<R>, usize), String> {
    let mut policy = cfg.token_batch_policy();
    policy.max_batch_size = policy.max_batch_size.max(max_tokens);
    let max_batch_tokens = policy.max_batch_size;
    let queue = Queue::start(name, version, runners, policy, BatchUnit::Tokens).map_err(|e| e.to_string())?;
    Ok((queue, max_batch_tokens))
}

/// The loaded copies as runners of the described kind (a loader that returns another kind is
/// a bug in the loader, reported as a load failure).
fn same_kind<R>(copies: Vec<Loaded>, runner: impl Fn(Loaded) -> Option<R>) -> Result<Vec<R>, String> {
    copies
        .into_iter()
        .map(|c| runner(c).ok_or_else(|| "the loader returned a different kind of model than it described".into()))
        .collect()
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| format!("{what} panicked"))?
}

/// One forward pass on a blank input so the first request does not pay for lazy setup, and so a
/// version whose weights cannot run fails here rather than on a client's request.
fn warm_up(model: &mut Loaded, description: &Description) -> Result<(), String> {
    match (model, description) {
        (Loaded::Image(model), Description::Image(config)) => {
            let [h, w, c] = config.input.shape;
            let blank =
                ImageBatch { n: 1, height: h, width: w, channels: c, data: vec![config.input.background; h * w * c] };
            let rows = model.predict(&blank).map_err(|e| format!("warm-up forward pass failed: {e}"))?;
            if rows.len() != 1 || rows[0].len() != config.output.shape[0] {
                return Err(format!(
                    "warm-up produced {} rows of {} values; config declares 1 row of {}",
                    rows.len(),
                    rows.first().map_or(0, |r| r.len()),
                    config.output.shape[0]
                ));
            }
            Ok(())
        }
        (Loaded::Embedder(model), Description::Embedder { info, tokenizer }) => {
            let ids = tokenizer.encode_truncated("warm up").map_err(|e| format!("warm-up tokenisation failed: {e}"))?;
            if ids.is_empty() {
                return Err("the tokenizer produced no tokens for \"warm up\"".into());
            }
            let vectors = model.embed(&[&ids]).map_err(|e| format!("warm-up forward pass failed: {e}"))?;
            match vectors.as_slice() {
                [v] if v.len() == info.dim => Ok(()),
                _ => Err(format!("warm-up produced {} vectors; expected 1 of {} values", vectors.len(), info.dim)),
            }
        }
        (Loaded::Scorer(model), Description::Scorer { info, tokenizer }) => {
            let pair = tokenizer
                .encode_pair("warm up", "a document", true)
                .map_err(|e| format!("warm-up tokenisation failed: {e}"))?;
            if pair.ids.is_empty() {
                return Err("the tokenizer produced no tokens for a warm-up pair".into());
            }
            let rows = model.score(&[&pair]).map_err(|e| format!("warm-up forward pass failed: {e}"))?;
            match rows.as_slice() {
                [r] if r.len() == info.labels.len() && r.iter().all(|s| s.is_finite()) => Ok(()),
                _ => Err(format!(
                    "warm-up produced {} score rows; expected 1 of {} finite values",
                    rows.len(),
                    info.labels.len()
                )),
            }
        }
        (Loaded::Generator(model), Description::Generator(spec)) => {
            let ids =
                spec.tokenizer.encode("warm up", false).map_err(|e| format!("warm-up tokenisation failed: {e}"))?;
            if ids.is_empty() {
                return Err("the tokenizer produced no tokens for \"warm up\"".into());
            }
            let mut seq = model.new_sequence();
            let logits = model
                .forward(&mut [GenItem::new(&mut seq, &ids, ids.len())])
                .map_err(|e| format!("warm-up forward pass failed: {e}"))?;
            match logits.as_slice() {
                [l] if l.len() == spec.info.vocab_size => Ok(()),
                _ => Err(format!(
                    "warm-up produced {} logit rows; expected 1 of {} values",
                    logits.len(),
                    spec.info.vocab_size
                )),
            }
        }
        (Loaded::Graph(model), Description::Graph(info)) => warm_up_graph(model.as_mut(), info),
        _ => Err("the loader returned a different kind of model than it described".into()),
    }
}

/// A graph whose sizes are all fixed (apart from the batch) runs once on zeros; one with open
/// sizes (pictures of any size) is not run, since no size is known to suit it.
fn warm_up_graph(model: &mut dyn aiserve_core::GraphModel, info: &aiserve_core::GraphInfo) -> Result<(), String> {
    let skip = usize::from(info.batched);
    let mut inputs = Vec::with_capacity(info.inputs.len());
    for spec in &info.inputs {
        if spec.dims.iter().skip(skip).any(|&d| d < 0) {
            tracing::debug!(input = %spec.name, "graph has open sizes: no warm-up pass");
            return Ok(());
        }
        let shape: Vec<usize> = spec.dims.iter().map(|&d| d.max(1) as usize).collect();
        let n: usize = shape.iter().product();
        if n > 1 << 26 {
            return Ok(());
        }
        inputs.push(aiserve_core::Tensor { shape, data: aiserve_core::TensorData::zeros(spec.datatype, n) });
    }
    let outputs = model.run(inputs).map_err(|e| format!("warm-up run failed: {e}"))?;
    if outputs.len() != info.outputs.len() {
        return Err(format!("warm-up gave {} outputs; the graph declares {}", outputs.len(), info.outputs.len()));
    }
    Ok(())
}
