//! The mirror: a local directory kept equal to the remote repository, one sync per round.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aiserve_runtime::source::{RepoSource, SyncFuture, SyncReport};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{GetOptions, ObjectStore};
use tokio::io::AsyncWriteExt;

use crate::layout::{self, RemoteFile, RemoteModel, RemoteVersion};
use crate::manifest::{self, Manifest};
use crate::StoreError;

/// Held while the process lives: one server per mirror directory.
const LOCK_FILE: &str = ".aiserve-mirror.lock";

pub struct Mirror {
    /// Lists the repository (gives up fast).
    lister: Arc<dyn ObjectStore>,
    /// Downloads files (as long as data flows).
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    /// The repository URL without secrets, for logs and the manifest.
    shown: String,
    cache: PathBuf,
    _lock: std::fs::File,
}

impl Mirror {
    /// Mirrors the repository at `repo` (`s3://bucket/prefix`, ...) into `cache`.
    pub fn open(repo: &str, cache: PathBuf) -> Result<Self, StoreError> {
        let opened = crate::location::open(repo)?;
        let mut mirror = Self::new(opened.get, opened.prefix, opened.shown, cache)?;
        mirror.lister = opened.list;
        Ok(mirror)
    }

    /// Mirrors `prefix` of `store` into `cache`, which must be empty, missing or a mirror
    /// already (it is emptied of everything the repository does not hold), and not in use by
    /// another process.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Key, shown: String, cache: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&cache).map_err(|e| StoreError::io(&cache, e))?;
        let is_mirror = cache.join(manifest::FILE).is_file() || cache.join(LOCK_FILE).is_file();
        let empty = std::fs::read_dir(&cache).map_err(|e| StoreError::io(&cache, e))?.next().is_none();
        if !is_mirror && !empty {
            return Err(StoreError::Cache(format!(
                "{}: holds files and is not a repository mirror; a mirror deletes what the remote repository lacks, so give it an empty or dedicated directory",
                cache.display()
            )));
        }
        let lock_path = cache.join(LOCK_FILE);
        let lock = std::fs::File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Cache(format!(
                "{}: another aiserve process mirrors into this directory; give each server its own (--repo-cache)",
                cache.display()
            ))
        })?;
        Ok(Self { lister: store.clone(), store, prefix, shown, cache, _lock: lock })
    }

    /// The local directory the version manager scans.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    pub fn location(&self) -> &str {
        &self.shown
    }

    /// Lists the repository and brings the mirror up to date. Fails only when the listing (or
    /// the mirror directory itself) fails, before anything is changed; a version that cannot be
    /// downloaded is counted in `failed` and left as it was.
    pub async fn sync(&self) -> Result<SyncReport, StoreError> {
        let objects: Vec<_> = self
            .lister
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError::List(self.shown.clone(), e.to_string()))?;
        let listing = layout::group(&self.prefix, objects);
        for (key, why) in &listing.skipped {
            tracing::debug!(key, why, "remote repository object skipped");
        }
        let mut manifest = Manifest::read(&self.cache, &self.shown).await;
        let mut report = SyncReport::default();
        for (name, is_dir) in visible_entries(&self.cache).await? {
            if !(is_dir && listing.models.contains_key(&name)) {
                remove(&self.cache.join(&name), is_dir).await?;
                manifest.forget_model(&name);
                report.removed += 1;
            }
        }
        for (name, model) in &listing.models {
            self.sync_model(name, model, &mut manifest, &mut report).await?;
        }
        manifest.write(&self.cache).await?;
        Ok(report)
    }

    async fn sync_model(
        &self,
        name: &str,
        model: &RemoteModel,
        manifest: &mut Manifest,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let dir = self.cache.join(name);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| StoreError::io(&dir, e))?;
        for (entry, is_dir) in hidden_entries(&dir).await? {
            // Staging left by an interrupted download.
            remove(&dir.join(entry), is_dir).await?;
        }
        for (entry, is_dir) in visible_entries(&dir).await? {
            let kept = if is_dir {
                model.versions.contains_key(&entry)
            } else {
                model.files.iter().any(|f| f.rel[0] == entry)
            };
            if !kept {
                remove(&dir.join(&entry), is_dir).await?;
                manifest.forget(&format!("{name}/{entry}{}", if is_dir { "/" } else { "" }));
                report.removed += usize::from(is_dir);
            }
        }
        for f in &model.files {
            let key = format!("{name}/{}", f.rel[0]);
            let path = dir.join(&f.rel[0]);
            if manifest.get(&key) == Some(&f.tag) && path.is_file() {
                continue;
            }
            let stage = dir.join(format!(".dl-{}", f.rel[0]));
            let done = match self.download(f, &stage).await {
                Ok(()) => tokio::fs::rename(&stage, &path).await.map_err(|e| StoreError::io(&path, e)),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    manifest.set(key, f.tag.clone());
                    report.downloaded += 1;
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&stage).await;
                    tracing::warn!(model = name, error = %e, "model file not mirrored; keeping the old copy");
                    report.failed += 1;
                }
            }
        }
        for (version, remote) in &model.versions {
            let key = format!("{name}/{version}/");
            let fingerprint = remote.fingerprint();
            if manifest.get(&key) == Some(&fingerprint) && dir.join(version).is_dir() {
                continue;
            }
            match self.download_version(&dir, version, remote).await {
                Ok(()) => {
                    tracing::info!(model = name, version, files = remote.files.len(), "version mirrored");
                    manifest.set(key, fingerprint);
                    // Progress survives a restart in the middle of a long first sync.
                    manifest.write(&self.cache).await?;
                    report.downloaded += 1;
                }
                Err(e) => {
                    tracing::warn!(model = name, version, error = %e, "version not mirrored; trying again next round");
                    report.failed += 1;
                }
            }
        }
        Ok(())
    }

    /// Downloads every file of a version into `.dl-<version>` and renames it into place.
    async fn download_version(&self, dir: &Path, version: &str, remote: &RemoteVersion) -> Result<(), StoreError> {
        let stage = dir.join(format!(".dl-{version}"));
        let result = async {
            tokio::fs::create_dir_all(&stage).await.map_err(|e| StoreError::io(&stage, e))?;
            for f in &remote.files {
                let path = f.rel.iter().fold(stage.clone(), |p, s| p.join(s));
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| StoreError::io(parent, e))?;
                }
                self.download(f, &path).await?;
            }
            let target = dir.join(version);
            let old = dir.join(format!(".old-{version}"));
            if tokio::fs::try_exists(&target).await.unwrap_or(false) {
                tokio::fs::rename(&target, &old).await.map_err(|e| StoreError::io(&target, e))?;
            }
            tokio::fs::rename(&stage, &target).await.map_err(|e| StoreError::io(&target, e))?;
            let _ = tokio::fs::remove_dir_all(&old).await;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&stage).await;
        }
        result
    }

    /// Streams one object into `path`, checking that exactly its listed size arrives.
    async fn download(&self, f: &RemoteFile, path: &Path) -> Result<(), StoreError> {
        let key = f.location.to_string();
        let get = |e: &dyn std::fmt::Display| StoreError::Get(key.clone(), e.to_string());
        let options = GetOptions { if_match: f.e_tag.clone(), ..Default::default() };
        let result = self.store.get_opts(&f.location, options).await.map_err(|e| get(&e))?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(path).await.map_err(|e| StoreError::io(path, e))?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| get(&e))?;
            written += chunk.len() as u64;
            if written > f.size {
                return Err(get(&format!("more than the {} bytes listed arrived (rewritten meanwhile?)", f.size)));
            }
            file.write_all(&chunk).await.map_err(|e| StoreError::io(path, e))?;
        }
        if written != f.size {
            return Err(get(&format!("{written} bytes arrived, {} listed", f.size)));
        }
        file.sync_all().await.map_err(|e| StoreError::io(path, e))
    }
}

impl RepoSource for Mirror {
    fn location(&self) -> &str {
        &self.shown
    }

    fn sync(&self) -> SyncFuture<'_> {
        Box::pin(async move { Mirror::sync(self).await.map_err(|e| e.to_string()) })
    }
}

/// Names of the entries of `dir` that do not start with `.`, and whether each is a directory.
async fn visible_entries(dir: &Path) -> Result<Vec<(String, bool)>, StoreError> {
    Ok(entries(dir).await?.into_iter().filter(|(n, _)| !n.starts_with('.')).collect())
}

/// The `.dl-` and `.old-` entries a download leaves when interrupted.
async fn hidden_entries(dir: &Path) -> Result<Vec<(String, bool)>, StoreError> {
    Ok(entries(dir).await?.into_iter().filter(|(n, _)| n.starts_with(".dl-") || n.starts_with(".old-")).collect())
}

async fn entries(dir: &Path) -> Result<Vec<(String, bool)>, StoreError> {
    let mut out = Vec::new();
    let mut rd = tokio::fs::read_dir(dir).await.map_err(|e| StoreError::io(dir, e))?;
    while let Some(e) = rd.next_entry().await.map_err(|e| StoreError::io(dir, e))? {
        let is_dir = e.file_type().await.map(|t| t.is_dir()).unwrap_or(false);
        if let Some(name) = e.file_name().to_str() {
            out.push((name.to_owned(), is_dir));
        }
    }
    out.sort();
    Ok(out)
}

async fn remove(path: &Path, is_dir: bool) -> Result<(), StoreError> {
    let r = if is_dir { tokio::fs::remove_dir_all(path).await } else { tokio::fs::remove_file(path).await };
    r.map_err(|e| StoreError::io(path, e))
}
