//! The version manager: polls the repository and moves the live set towards the policy.
//!
//! Each poll scans the repository on a blocking thread, asks `aiserve_core::plan` what to do for
//! every model, loads new versions (on the blocking pool: read weights, warm up with one forward
//! pass, start the model thread), and only then plans again to retire versions that left the
//! desired set, so a model keeps serving throughout a swap. A retiring version waits until no
//! request holds it before it is dropped. Load failures are recorded on the version and never
//! stop the server or other versions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiserve_core::config::VersionConfig;
use aiserve_core::plan::{plan, Action};
use aiserve_core::repository::{self, RepoScan};
use aiserve_core::{ImageBatch, ModelLoader, ModelName, Version};

use crate::registry::Registry;
use crate::worker::Servable;

pub struct Manager {
    pub repo: PathBuf,
    pub loader: Arc<dyn ModelLoader>,
    pub registry: Arc<Registry>,
}

impl Manager {
    /// Polls every `interval` until `shutdown` resolves.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
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
        let repo = self.repo.clone();
        let scan = match tokio::task::spawn_blocking(move || repository::scan(&repo)).await {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                tracing::warn!(repo = %self.repo.display(), error = %e, "cannot read the model repository");
                RepoScan::default()
            }
            Err(e) => {
                tracing::error!(error = %e, "repository scan panicked");
                return;
            }
        };
        for (path, why) in &scan.skipped {
            tracing::debug!(path = %path.display(), why, "skipped repository entry");
        }
        let mut names = self.registry.model_names();
        names.extend(scan.models.keys().cloned());
        names.sort();
        names.dedup();
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
        let config = self.registry.model_config(model).unwrap_or_else(aiserve_core::config::ModelConfig::new_default);
        let on_disk = found.map(|f| f.versions.iter().map(|(v, d)| (*v, d.fingerprint)).collect()).unwrap_or_default();

        for action in plan(&config.version_policy, &on_disk, &self.registry.live(model)) {
            if let Action::Load(v) = action {
                let dir = found.and_then(|f| f.versions.get(&v)).expect("plan loads only versions on disk");
                self.load(model, v, dir.path.clone(), dir.fingerprint, &config).await;
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

    async fn load(
        &self,
        model: &ModelName,
        version: Version,
        dir: PathBuf,
        fingerprint: u64,
        cfg: &aiserve_core::config::ModelConfig,
    ) {
        self.registry.set_loading(model, version, fingerprint);
        let loader = self.loader.clone();
        let (name, policy, instances) = (model.clone(), cfg.batch_policy(), cfg.instances);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || -> Result<Servable, String> {
            let config = loader.read_config(&dir).map_err(|e| e.to_string())?;
            let mut copies = Vec::with_capacity(instances);
            for _ in 0..instances {
                let mut classifier = loader.load(&dir, &config).map_err(|e| e.to_string())?;
                warm_up(classifier.as_mut(), &config)?;
                copies.push(classifier);
            }
            Servable::start(name, version, config, copies, policy).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("the loader panicked".into()));
        match result {
            Ok(servable) => {
                tracing::info!(%model, %version, seconds = started.elapsed().as_secs_f64(), "version available");
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
            tracing::info!(%model, %version, "version unloaded");
        });
    }
}

/// One forward pass on a blank image so the first request does not pay for lazy setup, and so a
/// version whose weights cannot run fails here rather than on a client's request.
fn warm_up(model: &mut dyn aiserve_core::ImageClassifier, config: &VersionConfig) -> Result<(), String> {
    let [h, w, c] = config.input.shape;
    let blank = ImageBatch { n: 1, height: h, width: w, channels: c, data: vec![config.input.background; h * w * c] };
    let rows = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.predict(&blank)))
        .map_err(|_| "warm-up forward pass panicked".to_string())?
        .map_err(|e| format!("warm-up forward pass failed: {e}"))?;
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
