//! The remote listing read as a repository: `<prefix>/<model>/<version>/<file...>` and the
//! model-level files beside the versions (`<prefix>/<model>/model.toml`), with the same rules as
//! the local scanner: entries starting with `.` are skipped, version directories are named by a
//! positive integer, model names are valid model names.

use std::collections::BTreeMap;

use aiserve_core::{ModelName, Version};
use object_store::path::Path;
use object_store::ObjectMeta;
use sha2::{Digest, Sha256};

/// One object to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub location: Path,
    /// Path segments below the model directory (model-level files) or the version directory.
    pub rel: Vec<String>,
    pub size: u64,
    /// The store's entity tag, else the modification time: what tells a rewritten object.
    pub tag: String,
    /// The entity tag, when the store gives one: downloads ask for exactly that object
    /// (`If-Match`), so a file rewritten during the download fails it instead of mixing versions.
    pub e_tag: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteVersion {
    pub files: Vec<RemoteFile>,
}

impl RemoteVersion {
    /// Names, sizes and tags of every file: equal fingerprints mean nothing to download.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(f.rel.join("/").as_bytes());
            h.update(format!("\t{}\t{}\n", f.size, f.tag).as_bytes());
        }
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteModel {
    /// Files directly in the model directory (`model.toml`, a pipeline's character list).
    pub files: Vec<RemoteFile>,
    /// By the version directory's name as written (`7`, `007`).
    pub versions: BTreeMap<String, RemoteVersion>,
}

#[derive(Debug, Default)]
pub struct Listing {
    pub models: BTreeMap<String, RemoteModel>,
    /// Objects left out, with why (logged at debug level).
    pub skipped: Vec<(String, String)>,
}

/// Groups the objects listed under `prefix` by model and version.
pub fn group(prefix: &Path, objects: Vec<ObjectMeta>) -> Listing {
    let mut out = Listing::default();
    let depth = prefix.parts().count();
    for meta in objects {
        let parts: Vec<String> = meta.location.parts().skip(depth).map(|p| p.as_ref().to_owned()).collect();
        let key = meta.location.to_string();
        if let Some(why) = unsafe_segment(&parts) {
            out.skipped.push((key, why));
            continue;
        }
        if parts.iter().any(|p| p.starts_with('.')) {
            continue;
        }
        let tag = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
        let e_tag = meta.e_tag.clone();
        let file = |rel: &[String]| RemoteFile {
            location: meta.location.clone(),
            rel: rel.to_vec(),
            size: meta.size,
            tag,
            e_tag,
        };
        match parts.as_slice() {
            [name] => out.skipped.push((key, format!("`{name}` is a file at the top of the repository"))),
            [model, ..] if model.parse::<ModelName>().is_err() => {
                out.skipped.push((key, format!("`{model}` is not a valid model name")))
            }
            [model, name] => out.models.entry(model.clone()).or_default().files.push(file(std::slice::from_ref(name))),
            [model, version, rest @ ..] if version.parse::<Version>().is_ok() => out
                .models
                .entry(model.clone())
                .or_default()
                .versions
                .entry(version.clone())
                .or_default()
                .files
                .push(file(rest)),
            [_, dir, ..] => {
                out.skipped.push((key, format!("`{dir}`: version directories must be named by a positive integer")))
            }
            [] => out.skipped.push((key, "the repository prefix itself is an object".into())),
        }
    }
    for model in out.models.values_mut() {
        model.files.sort_by(|a, b| a.rel.cmp(&b.rel));
        for v in model.versions.values_mut() {
            v.files.sort_by(|a, b| a.rel.cmp(&b.rel));
        }
    }
    out
}

/// A segment that cannot name a local file safely (object keys may hold anything).
fn unsafe_segment(parts: &[String]) -> Option<String> {
    parts.iter().find_map(|p| {
        let bad = p.is_empty() || p == "." || p == ".." || p.contains(['/', '\\', '\0']) || p.len() > 255;
        bad.then(|| format!("the segment {p:?} cannot be a local file name"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, size: u64, etag: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(key),
            last_modified: Default::default(),
            size,
            e_tag: Some(etag.into()),
            version: None,
        }
    }

    #[test]
    fn groups_models_versions_and_model_files() {
        let listing = group(
            &Path::from("prod/models"),
            vec![
                meta("prod/models/digits/1/model.safetensors", 10, "a"),
                meta("prod/models/digits/1/sub/labels.txt", 3, "b"),
                meta("prod/models/digits/model.toml", 5, "c"),
                meta("prod/models/digits/2/model.safetensors", 10, "d"),
                meta("prod/models/digits/.tmp-1/x", 1, "e"),
                meta("prod/models/digits/latest/x", 1, "f"),
                meta("prod/models/README.md", 1, "g"),
                meta("prod/models/Bad Name!/1/x", 1, "h"),
                meta("prod/models/.hidden/1/x", 1, "i"),
            ],
        );
        let digits = &listing.models["digits"];
        assert_eq!(digits.files.len(), 1);
        assert_eq!(digits.files[0].rel, ["model.toml"]);
        assert_eq!(digits.versions.keys().collect::<Vec<_>>(), ["1", "2"]);
        let v1 = &digits.versions["1"];
        assert_eq!(
            v1.files.iter().map(|f| f.rel.join("/")).collect::<Vec<_>>(),
            ["model.safetensors", "sub/labels.txt"]
        );
        assert_eq!(listing.models.len(), 1);
        let skipped: Vec<_> = listing.skipped.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(skipped, ["prod/models/digits/latest/x", "prod/models/README.md", "prod/models/Bad Name!/1/x"]);
    }

    #[test]
    fn fingerprint_follows_names_sizes_and_tags() {
        let one = |key: &str, size, tag| {
            group(&Path::from("r"), vec![meta(key, size, tag)]).models["m"].versions["1"].fingerprint()
        };
        let base = one("r/m/1/w", 4, "x");
        assert_eq!(base, one("r/m/1/w", 4, "x"));
        assert_ne!(base, one("r/m/1/w", 5, "x"));
        assert_ne!(base, one("r/m/1/w", 4, "y"));
        assert_ne!(base, one("r/m/1/v", 4, "x"));
    }
}
