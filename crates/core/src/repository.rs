//! Scanning a model repository laid out as `<repo>/<model>/<version>/`.
//!
//! The scan is a synchronous snapshot of what is on disk; the version manager diffs it against
//! what is live. Entries starting with `.` are skipped (that is where `aiserve train` stages a
//! version before renaming it into place), non-numeric version directories are skipped, and any
//! path that resolves outside the repository (a symlink escape) is refused and reported.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::config::{ModelConfig, MAX_CONFIG_BYTES, MODEL_CONFIG_FILE};
use crate::ids::{ModelName, Version};
use crate::plan::Fingerprint;

#[derive(Debug, Default)]
pub struct RepoScan {
    pub models: BTreeMap<ModelName, ModelScan>,
    /// Entries that were skipped, with the reason (shown in logs).
    pub skipped: Vec<(PathBuf, String)>,
}

#[derive(Debug)]
pub struct ModelScan {
    pub dir: PathBuf,
    /// The parsed `model.toml` (defaults when absent), or why it could not be read.
    pub config: Result<ModelConfig, String>,
    pub versions: BTreeMap<Version, VersionDir>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDir {
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
}

/// Reads the repository. Fails only when the repository itself cannot be read.
pub fn scan(repo: &Path) -> std::io::Result<RepoScan> {
    let root = repo.canonicalize()?;
    let mut out = RepoScan::default();
    for entry in sorted_dir(&root)? {
        let Some(name) = visible_name(&entry) else { continue };
        let Some(dir) = contained_dir(&root, &entry, &mut out.skipped) else { continue };
        let model: ModelName = match name.parse() {
            Ok(m) => m,
            Err(e) => {
                out.skipped.push((entry, e.to_string()));
                continue;
            }
        };
        let config = read_model_config(&dir);
        let mut versions = BTreeMap::new();
        for ventry in sorted_dir(&dir)? {
            let Some(vname) = visible_name(&ventry) else { continue };
            let Ok(version) = vname.parse::<Version>() else {
                if ventry.is_dir() {
                    out.skipped.push((ventry, "version directories must be named by a positive integer".into()));
                }
                continue;
            };
            let Some(vdir) = contained_dir(&root, &ventry, &mut out.skipped) else { continue };
            let fingerprint = fingerprint(&vdir);
            versions.insert(version, VersionDir { path: vdir, fingerprint });
        }
        out.models.insert(model, ModelScan { dir, config, versions });
    }
    Ok(out)
}

/// The highest version number present for a model directory (0 when none): `train` publishes N+1.
pub fn latest_version(model_dir: &Path) -> std::io::Result<u64> {
    if !model_dir.exists() {
        return Ok(0);
    }
    let mut max = 0;
    for entry in sorted_dir(model_dir)? {
        if let Some(v) = entry.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<Version>().ok()) {
            max = max.max(v.0);
        }
    }
    Ok(max)
}

fn read_model_config(dir: &Path) -> Result<ModelConfig, String> {
    let path = dir.join(MODEL_CONFIG_FILE);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::new_default()),
        Err(e) => Err(format!("{MODEL_CONFIG_FILE}: {e}")),
        Ok(m) if m.len() > MAX_CONFIG_BYTES => {
            Err(format!("{MODEL_CONFIG_FILE}: must be at most {MAX_CONFIG_BYTES} bytes, got {}", m.len()))
        }
        Ok(_) => std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| ModelConfig::parse(&t))
            .map_err(|e| format!("{MODEL_CONFIG_FILE}: {e}")),
    }
}

fn sorted_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

fn visible_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str()).filter(|n| !n.starts_with('.'))
}

/// Resolves `path` and returns it when it is a directory inside `root`.
fn contained_dir(root: &Path, path: &Path, skipped: &mut Vec<(PathBuf, String)>) -> Option<PathBuf> {
    let resolved = path.canonicalize().ok()?;
    if !resolved.starts_with(root) {
        skipped.push((path.to_owned(), "resolves outside the model repository".into()));
        return None;
    }
    resolved.is_dir().then_some(resolved)
}

/// Hash of the names, sizes and modification times of the files in a version directory (two
/// levels deep), so that a rewritten version is noticed.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut h = std::hash::DefaultHasher::new();
    fn walk(dir: &Path, depth: usize, h: &mut std::hash::DefaultHasher) {
        let Ok(entries) = sorted_dir(dir) else { return };
        for p in entries {
            let Ok(meta) = std::fs::metadata(&p) else { continue };
            p.file_name().hash(h);
            meta.len().hash(h);
            meta.modified().ok().hash(h);
            if meta.is_dir() && depth > 0 {
                walk(&p, depth - 1, h);
            }
        }
    }
    walk(dir, 1, &mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn scans_models_versions_and_configs() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        fs::create_dir_all(repo.join("digits/1")).unwrap();
        fs::create_dir_all(repo.join("digits/3")).unwrap();
        fs::create_dir_all(repo.join("digits/.tmp-4")).unwrap();
        fs::create_dir_all(repo.join("digits/latest")).unwrap();
        fs::write(repo.join("digits/1/model.safetensors"), b"x").unwrap();
        fs::create_dir_all(repo.join("broken/1")).unwrap();
        fs::write(repo.join("broken/model.toml"), "version_policy = 3").unwrap();
        fs::create_dir_all(repo.join("bad name")).unwrap();

        let scan = scan(repo).unwrap();
        let names: Vec<_> = scan.models.keys().map(|m| m.as_str().to_owned()).collect();
        assert_eq!(names, ["broken", "digits"]);
        let digits = &scan.models[&"digits".parse::<ModelName>().unwrap()];
        assert_eq!(digits.versions.keys().copied().collect::<Vec<_>>(), [Version(1), Version(3)]);
        assert!(digits.config.is_ok());
        let broken = &scan.models[&"broken".parse::<ModelName>().unwrap()];
        assert!(broken.config.as_ref().unwrap_err().contains("model.toml"));
        assert!(scan.skipped.iter().any(|(p, _)| p.ends_with("bad name")));
        assert!(scan.skipped.iter().any(|(p, _)| p.ends_with("latest")));
        assert_eq!(latest_version(&repo.join("digits")).unwrap(), 3);
        assert_eq!(latest_version(&repo.join("nothing")).unwrap(), 0);
    }

    #[test]
    fn fingerprint_changes_with_files() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fingerprint(tmp.path());
        fs::write(tmp.path().join("w"), b"1234").unwrap();
        let b = fingerprint(tmp.path());
        assert_ne!(a, b);
        assert_eq!(b, fingerprint(tmp.path()));
    }

    #[cfg(unix)]
    #[test]
    fn symlink_escapes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(outside.path().join("1")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("m")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("1"), tmp.path().join("m/1")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("evil")).unwrap();
        let scan = scan(tmp.path()).unwrap();
        assert_eq!(scan.models.len(), 1);
        assert!(scan.models.values().next().unwrap().versions.is_empty());
        assert_eq!(scan.skipped.iter().filter(|(_, why)| why.contains("outside")).count(), 2);
    }
}
