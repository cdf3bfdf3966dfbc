//! What the server holds: every model, its versions, their states, and the servable handles.
//!
//! Guarded by one `std::sync::RwLock` held only for map lookups and updates (never across an
//! `.await` or a model call). Request handlers clone an `Arc<Servable>` out and release the lock;
//! that `Arc` keeps a retiring version alive until the request finishes (TF Serving's handle).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use aiserve_core::config::ModelConfig;
use aiserve_core::plan::{Fingerprint, LiveVersion};
use aiserve_core::state::VersionState;
use aiserve_core::{ModelName, Version};

use crate::error::Error;
use crate::servable::Servable;

#[derive(Default)]
pub struct Registry {
    models: RwLock<BTreeMap<ModelName, ModelEntry>>,
    /// Set once the first repository poll has finished (readiness).
    initial_poll_done: AtomicBool,
    /// Set when shutdown begins: readiness answers no while requests are still served.
    draining: AtomicBool,
}

#[derive(Default)]
struct ModelEntry {
    config: Option<ModelConfig>,
    config_error: Option<String>,
    versions: BTreeMap<Version, VersionEntry>,
}

struct VersionEntry {
    state: VersionState,
    error: Option<String>,
    fingerprint: Fingerprint,
    servable: Option<Arc<Servable>>,
}

/// One version's status, for the status endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionStatus {
    pub version: Version,
    pub state: VersionState,
    pub error: Option<String>,
}

/// One model's status.
#[derive(Clone, Debug)]
pub struct ModelStatus {
    pub name: ModelName,
    pub versions: Vec<VersionStatus>,
}

impl Registry {
    /// `aiserve_model_state` as it is now, for a metrics scrape.
    pub fn state_metrics(&self) -> Vec<prometheus::proto::MetricFamily> {
        prometheus::core::Collector::collect(&ModelStates(self))
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn mark_initial_poll_done(&self) {
        self.initial_poll_done.store(true, Ordering::Release);
    }

    pub fn initial_poll_done(&self) -> bool {
        self.initial_poll_done.load(Ordering::Acquire)
    }

    /// Shutdown has begun: readiness goes false so load balancers stop sending, while requests
    /// that still arrive are served until the listeners close.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Readiness: the first poll is done and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.initial_poll_done() && !self.is_draining()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ModelName, ModelEntry>> {
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ModelName, ModelEntry>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The servable for a request: the given version, or the highest available one.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<Servable>, Error> {
        let models = self.read();
        let entry = model
            .parse::<ModelName>()
            .ok()
            .and_then(|m| models.get(&m))
            .ok_or_else(|| Error::ModelNotFound(model.to_owned()))?;
        match version {
            Some(v) => {
                let parsed: Version = v.parse()?;
                let ve = entry.versions.get(&parsed);
                match ve.and_then(|e| e.servable.as_ref().filter(|_| e.state == VersionState::Available)) {
                    Some(s) => Ok(s.clone()),
                    None => Err(Error::VersionNotFound {
                        model: model.to_owned(),
                        version: v.to_owned(),
                        hint: match ve {
                            Some(e) => format!(" (it is {})", e.state),
                            None => available_hint(entry),
                        },
                    }),
                }
            }
            None => entry
                .versions
                .values()
                .rev()
                .find(|e| e.state == VersionState::Available)
                .and_then(|e| e.servable.clone())
                .ok_or_else(|| Error::NotReady { model: model.to_owned(), detail: not_ready_detail(entry) }),
        }
    }

    pub fn status(&self, model: &str) -> Option<ModelStatus> {
        let models = self.read();
        let name: ModelName = model.parse().ok()?;
        models.get(&name).map(|e| status_of(&name, e))
    }

    /// The versions of `model` that are serving now, oldest first.
    pub fn available_versions(&self, model: &str) -> Vec<Version> {
        self.status(model)
            .map(|s| s.versions.iter().filter(|v| v.state == VersionState::Available).map(|v| v.version).collect())
            .unwrap_or_default()
    }

    pub fn statuses(&self) -> Vec<ModelStatus> {
        self.read().iter().map(|(n, e)| status_of(n, e)).collect()
    }

    /// The model's config as last read (defaults if never read).
    pub fn model_config(&self, model: &ModelName) -> Option<ModelConfig> {
        self.read().get(model).and_then(|e| e.config.clone())
    }

    pub fn model_names(&self) -> Vec<ModelName> {
        self.read().keys().cloned().collect()
    }

    /// What the version manager plans against.
    pub fn live(&self, model: &ModelName) -> BTreeMap<Version, LiveVersion> {
        self.read()
            .get(model)
            .map(|e| {
                e.versions
                    .iter()
                    .map(|(v, ve)| (*v, LiveVersion { state: ve.state, fingerprint: ve.fingerprint }))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_config(&self, model: &ModelName, config: Result<ModelConfig, String>) {
        let mut models = self.write();
        let entry = models.entry(model.clone()).or_default();
        match config {
            Ok(c) => {
                entry.config = Some(c);
                entry.config_error = None;
            }
            Err(e) => entry.config_error = Some(e),
        }
    }

    pub fn set_loading(&self, model: &ModelName, version: Version, fingerprint: Fingerprint) {
        let mut models = self.write();
        let entry = models.entry(model.clone()).or_default();
        entry
            .versions
            .insert(version, VersionEntry { state: VersionState::Loading, error: None, fingerprint, servable: None });
    }

    pub fn set_available(&self, servable: Arc<Servable>) {
        let mut models = self.write();
        let entry = models.entry(servable.model.clone()).or_default();
        if let Some(ve) = entry.versions.get_mut(&servable.version) {
            ve.state = VersionState::Available;
            ve.servable = Some(servable);
        }
    }

    pub fn set_failed(&self, model: &ModelName, version: Version, error: String) {
        let mut models = self.write();
        if let Some(ve) = models.get_mut(model).and_then(|e| e.versions.get_mut(&version)) {
            ve.state = VersionState::Failed;
            ve.error = Some(error);
            ve.servable = None;
        }
    }

    /// Moves a version to UNLOADING and hands back its servable so the caller can wait for
    /// in-flight requests to finish before calling [`Registry::set_ended`].
    pub fn begin_unload(&self, model: &ModelName, version: Version) -> Option<Arc<Servable>> {
        let mut models = self.write();
        let ve = models.get_mut(model)?.versions.get_mut(&version)?;
        ve.state = VersionState::Unloading;
        ve.servable.take()
    }

    pub fn set_ended(&self, model: &ModelName, version: Version) {
        let mut models = self.write();
        if let Some(ve) = models.get_mut(model).and_then(|e| e.versions.get_mut(&version)) {
            if ve.state == VersionState::Unloading {
                ve.state = VersionState::End;
            }
        }
    }

    /// Drops a version's record; drops the model when nothing is left of it.
    pub fn forget(&self, model: &ModelName, version: Version) {
        let mut models = self.write();
        if let Some(entry) = models.get_mut(model) {
            entry.versions.remove(&version);
        }
    }

    /// Drops a model that has vanished from the repository and has no versions left.
    pub fn forget_model_if_empty(&self, model: &ModelName) {
        let mut models = self.write();
        if models.get(model).is_some_and(|e| e.versions.values().all(|v| v.state == VersionState::End)) {
            models.remove(model);
        }
    }
}

fn status_of(name: &ModelName, e: &ModelEntry) -> ModelStatus {
    ModelStatus {
        name: name.clone(),
        versions: e
            .versions
            .iter()
            .map(|(v, ve)| VersionStatus { version: *v, state: ve.state, error: ve.error.clone() })
            .collect(),
    }
}

fn available_hint(entry: &ModelEntry) -> String {
    let avail: Vec<String> =
        entry.versions.iter().filter(|(_, e)| e.state == VersionState::Available).map(|(v, _)| v.to_string()).collect();
    if avail.is_empty() {
        String::new()
    } else {
        format!(" (available: {})", avail.join(", "))
    }
}

fn not_ready_detail(entry: &ModelEntry) -> String {
    if let Some(e) = &entry.config_error {
        return format!(" (its model config is invalid: {e})");
    }
    match entry.versions.iter().next_back() {
        Some((v, e)) => match &e.error {
            Some(err) => format!(" (version {v} failed to load: {err})"),
            None => format!(" (version {v} is {})", e.state),
        },
        None => " (no versions in the repository)".into(),
    }
}

/// `aiserve_model_state{model,version,state}`: 1 for the state each known version is in, read
/// from the registry when collected.
struct ModelStates<'a>(&'a Registry);

impl prometheus::core::Collector for ModelStates<'_> {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("aiserve_model_state", "1 for the state each known version is in"),
            &["model", "version", "state"],
        )
        .expect("valid metric");
        for st in self.0.statuses() {
            for v in st.versions {
                let version = v.version.to_string();
                gauge.with_label_values(&[st.name.as_str(), &version, v.state.tf_serving_name()]).set(1);
            }
        }
        prometheus::core::Collector::collect(&gauge)
    }
}
