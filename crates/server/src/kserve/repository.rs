//! The KServe / Triton model repository extension as both front ends speak it (admin scope):
//! the index of every version with its state, and loading or unloading a model by name.
//!
//! The repository is still polled; `unload` takes every version of a model out of service (in-
//! flight requests finish first) and keeps it out until `load`, which reconciles the model with
//! the repository at once and answers only when a version serves (or with the load error).

use std::collections::BTreeMap;

use aiserve_core::state::VersionState;
use aiserve_core::ModelName;
use aiserve_runtime::manager::Manager;
use aiserve_runtime::{Error, Runtime};

/// One row of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub name: String,
    pub version: String,
    /// Triton's state names: READY, LOADING, UNLOADING, UNAVAILABLE.
    pub state: &'static str,
    pub reason: Option<String>,
}

fn manager(rt: &Runtime) -> Result<&Manager, Error> {
    rt.manager.as_deref().ok_or_else(|| Error::NotFound("this server has no model repository".into()))
}

/// Triton's state names.
fn triton_state(s: VersionState) -> &'static str {
    match s {
        VersionState::Available => "READY",
        VersionState::Loading => "LOADING",
        VersionState::Unloading => "UNLOADING",
        VersionState::End | VersionState::Failed => "UNAVAILABLE",
    }
}

/// Every version the server holds or the repository has, by model and version (`ready_only`:
/// just those serving).
pub async fn index(rt: &Runtime, ready_only: bool) -> Result<Vec<IndexRow>, Error> {
    let m = manager(rt)?;
    let scan = m.scan().await.unwrap_or_default();
    let unloaded = m.unloaded_models();
    let mut rows: BTreeMap<(String, u64), IndexRow> = BTreeMap::new();
    for st in rt.registry.statuses() {
        for v in &st.versions {
            let reason = match (&v.error, v.state) {
                (Some(e), _) => Some(e.clone()),
                (None, VersionState::End) => Some("unloaded".to_string()),
                _ => None,
            };
            let row = IndexRow {
                name: st.name.to_string(),
                version: v.version.to_string(),
                state: triton_state(v.state),
                reason,
            };
            rows.insert((st.name.to_string(), v.version.0), row);
        }
    }
    // Versions on disk the server does not hold: unloaded by request, or outside the policy.
    for (name, found) in &scan.models {
        for v in found.versions.keys() {
            rows.entry((name.to_string(), v.0)).or_insert_with(|| {
                let reason = if unloaded.contains(name) { "unloaded" } else { "not selected by the version policy" };
                IndexRow {
                    name: name.to_string(),
                    version: v.to_string(),
                    state: "UNAVAILABLE",
                    reason: Some(reason.into()),
                }
            });
        }
    }
    Ok(rows.into_values().filter(|r| !ready_only || r.state == "READY").collect())
}

fn model_name(model: &str) -> Result<ModelName, Error> {
    model.parse().map_err(|_| Error::ModelNotFound(model.to_owned()))
}

/// Loads (or reloads) `model` from the repository; returns once a version serves.
pub async fn load(rt: &Runtime, model: &str) -> Result<(), Error> {
    let name = model_name(model)?;
    match manager(rt)?.load_model(&name).await {
        Ok(()) => Ok(()),
        Err(e) if e.contains("not in the repository") => Err(Error::ModelNotFound(model.to_owned())),
        Err(e) => Err(Error::invalid("model", e)),
    }
}

/// Takes every version of `model` out of service until it is loaded again.
pub async fn unload(rt: &Runtime, model: &str) -> Result<(), Error> {
    let name = model_name(model)?;
    manager(rt)?.unload_model(&name).await.map_err(|_| Error::ModelNotFound(model.to_owned()))
}
