//! Publishing a new version into a model repository, atomically (`aiserve train`, `aiserve pull`).
//!
//! The version is staged in `<repo>/<model>/.tmp-<pid>-<N>/` (the scanner ignores dot entries)
//! and renamed to `<repo>/<model>/<N>/` only when complete, so a polling server never sees a
//! half-written version. `N` is one above the highest version present; if another publisher
//! takes `N` first, the next number is tried. A failed write leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::repository::latest_version;
use crate::{ModelName, Version};

/// Runs `write` on a fresh staging directory, then publishes it as version N+1 of
/// `<repo>/<model>`; returns the version and its path.
pub fn publish_version<E: From<std::io::Error>>(
    repo: &Path,
    model: &ModelName,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(Version, PathBuf), E> {
    let model_dir = repo.join(model.as_str());
    std::fs::create_dir_all(&model_dir)?;
    let stage = model_dir.join(format!(".tmp-{}-{}", std::process::id(), latest_version(&model_dir)? + 1));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    std::fs::create_dir(&stage)?;
    let result = write(&stage).and_then(|()| Ok(rename_into_place(&model_dir, &stage)?));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

fn rename_into_place(model_dir: &Path, stage: &Path) -> std::io::Result<(Version, PathBuf)> {
    for _ in 0..100 {
        let next = Version(latest_version(model_dir)? + 1);
        let target = model_dir.join(next.to_string());
        // create_dir claims the number (fails if taken); rename then replaces the empty dir.
        match std::fs::create_dir(&target) {
            Ok(()) => {
                std::fs::rename(stage, &target)?;
                return Ok((next, target));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not claim a new version number after 100 attempts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_versions_and_no_leftovers_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let name: ModelName = "m".parse().unwrap();
        let write = |d: &Path| std::fs::write(d.join("f"), "x");
        let (v1, p1) = publish_version(tmp.path(), &name, write).unwrap();
        let (v2, _) = publish_version(tmp.path(), &name, write).unwrap();
        assert_eq!((v1, v2), (Version(1), Version(2)));
        assert!(p1.join("f").is_file());
        let failed: Result<_, std::io::Error> =
            publish_version(tmp.path(), &name, |_| Err(std::io::Error::other("no")));
        assert!(failed.is_err());
        let mut entries: Vec<_> = std::fs::read_dir(tmp.path().join("m"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, ["1", "2"]);
    }
}
