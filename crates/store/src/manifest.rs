//! What the mirror holds, kept beside it (`.aiserve-mirror.json`), so a restarted server
//! downloads only what changed: the remote fingerprint of each version and the tag of each
//! model-level file, by `model/version/` and `model/file`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::StoreError;

pub const FILE: &str = ".aiserve-mirror.json";

#[derive(Debug, Default)]
pub struct Manifest {
    /// The repository it mirrors (redacted URL): another repository's mirror starts over.
    source: String,
    entries: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest in `cache`, or an empty one for `source` when missing, unreadable or made
    /// for another repository (everything is then downloaded again).
    pub async fn read(cache: &Path, source: &str) -> Self {
        let empty = || Self { source: source.to_owned(), entries: Default::default() };
        let Ok(text) = tokio::fs::read_to_string(cache.join(FILE)).await else { return empty() };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return empty() };
        if v["source"].as_str() != Some(source) {
            return empty();
        }
        let entries = v["entries"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        Self { source: source.to_owned(), entries }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: String, value: String) {
        self.entries.insert(key, value);
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Forgets every entry of a model.
    pub fn forget_model(&mut self, model: &str) {
        let prefix = format!("{model}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }

    /// Written to a temporary file and renamed over the old one.
    pub async fn write(&self, cache: &Path) -> Result<(), StoreError> {
        let json = serde_json::json!({ "source": self.source, "entries": self.entries });
        let tmp: PathBuf = cache.join(format!("{FILE}.tmp"));
        tokio::fs::write(&tmp, json.to_string()).await.map_err(|e| StoreError::io(&tmp, e))?;
        tokio::fs::rename(&tmp, cache.join(FILE)).await.map_err(|e| StoreError::io(&tmp, e))
    }
}
