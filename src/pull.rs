//! `aiserve pull <model-id>`: download a model from the Hugging Face Hub into the repository as a
//! new version (what `ollama pull` and `huggingface-cli download` do, in one step).
//!
//! Files go through the standard Hugging Face cache (`HF_HOME`, default `~/.cache/huggingface`),
//! so anything other tools downloaded is reused and nothing is fetched twice; `HF_ENDPOINT`
//! points at a mirror and `HF_TOKEN` (or the cache's token file) authenticates. With
//! `HF_HUB_OFFLINE=1` / `--offline`, or when the hub cannot be reached, the files come from the
//! cache alone. Only what serving needs is copied: configs, tokenizer and the safetensors or
//! GGUF weights (never pickled `.bin`). The copy is checked with the loader before it is
//! published, so a server polling the repository never sees a version it cannot load.

use std::path::{Path, PathBuf};

use aiserve_core::{ModelLoader, ModelName};
use aiserve_models::CandleLoader;
use anyhow::{bail, Context};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Hugging Face model id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub model_id: String,
    /// Branch, tag or commit to download.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Model repository to publish into.
    #[arg(long, env = "AISERVE_REPO", default_value = "models")]
    pub repo: PathBuf,
    /// Model name in the repository; the id's last part, lowercased, by default.
    #[arg(long)]
    pub name: Option<String>,
    /// Weight file to take when the model has several (e.g. one of many `.gguf` quantisations).
    #[arg(long)]
    pub file: Option<String>,
    /// Use only the local Hugging Face cache (also `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    pub offline: bool,
}

pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let default_name = args.model_id.rsplit('/').next().unwrap_or(&args.model_id).to_lowercase();
    let name: ModelName = args
        .name
        .as_deref()
        .unwrap_or(&default_name)
        .parse()
        .map_err(|e| anyhow::anyhow!("model name: {e} (choose one with --name)"))?;
    let repo = Repo::with_revision(args.model_id.clone(), RepoType::Model, args.revision.clone());
    let cache = Cache::from_env();
    let offline =
        args.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));

    let api = ApiBuilder::from_env()
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_token(std::env::var("HF_TOKEN").ok().or_else(|| cache.token()))
        .build()
        .context("setting up the Hugging Face client")?;
    let remote = api.repo(repo.clone());
    let (listing, from_cache) = if offline {
        (cached_files(&cache, &repo)?, true)
    } else {
        match remote.info() {
            Ok(info) => (info.siblings.into_iter().map(|s| s.rfilename).collect(), false),
            Err(e) => {
                tracing::warn!(error = %e, "the Hugging Face hub is unreachable; using the local cache");
                (cached_files(&cache, &repo).with_context(|| format!("the hub is unreachable ({e})"))?, true)
            }
        }
    };
    let files = select_files(&listing, args.file.as_deref()).map_err(|e| anyhow::anyhow!("{}: {e}", args.model_id))?;

    let mut local = Vec::with_capacity(files.len());
    for f in &files {
        let path = if from_cache {
            cache.repo(repo.clone()).get(f).with_context(|| format!("{f} is not in the local cache"))?
        } else {
            remote.get(f).with_context(|| format!("downloading {f}"))?
        };
        local.push((f.clone(), path));
    }
    let (version, dir) = aiserve_core::publish::publish_version(&args.repo, &name, |stage| -> anyhow::Result<()> {
        for (rel, src) in &local {
            let dst = stage.join(rel);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(src, &dst).with_context(|| format!("copying {rel}"))?;
        }
        CandleLoader::cpu()
            .describe(stage, &aiserve_core::config::ModelConfig::new_default())
            .map_err(|e| anyhow::anyhow!("{} was downloaded but cannot be served: {e}", args.model_id))?;
        Ok(())
    })?;
    println!("published {} ({}) as {name} version {version} at {}", args.model_id, args.revision, dir.display());
    Ok(())
}

/// Every file of the cached snapshot of `repo` (its revision resolved through `refs/`).
fn cached_files(cache: &Cache, repo: &Repo) -> anyhow::Result<Vec<String>> {
    let base = cache.path().join(repo.folder_name());
    let commit = match std::fs::read_to_string(base.join("refs").join(repo.revision())) {
        Ok(c) => c.trim().to_owned(),
        Err(_) => repo.revision().to_owned(), // a commit hash names its snapshot directly
    };
    let snapshot = base.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        bail!(
            "{} at revision {} is not in the Hugging Face cache at {}",
            repo.folder_name(),
            repo.revision(),
            cache.path().display()
        );
    }
    let mut out = Vec::new();
    walk(&snapshot, &snapshot, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Config and tokenizer files a served model may read.
const SERVING_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "vocab.txt",
];

/// The files to copy out of a hub listing: serving configs, sentence-transformers module
/// configs (`1_Pooling/config.json`), and one set of weights (safetensors, sharded safetensors,
/// or one GGUF file).
fn select_files(listing: &[String], file: Option<&str>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = listing
        .iter()
        .filter(|f| {
            SERVING_FILES.contains(&f.as_str())
                || f.split_once('/').is_some_and(|(dir, rest)| {
                    rest == "config.json" && dir.split_once('_').is_some_and(|(n, _)| n.parse::<u32>().is_ok())
                })
        })
        .cloned()
        .collect();
    if let Some(f) = file {
        if !listing.iter().any(|l| l == f) {
            return Err(format!("--file {f:?} is not in the model (it has {})", listing.join(", ")));
        }
        out.push(f.to_owned());
    } else if listing.iter().any(|f| f == "model.safetensors") {
        out.push("model.safetensors".into());
    } else if listing.iter().any(|f| f == "model.safetensors.index.json") {
        out.extend(listing.iter().filter(|f| is_shard(f) || *f == "model.safetensors.index.json").cloned());
    } else {
        let ggufs: Vec<&String> = listing.iter().filter(|f| f.ends_with(".gguf")).collect();
        match ggufs.as_slice() {
            [one] => out.push((*one).clone()),
            [] => {
                return Err(format!(
                    "no safetensors or GGUF weights to serve (files: {}); pickled .bin weights are never loaded",
                    listing.join(", ")
                ))
            }
            many => {
                let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                return Err(format!("several GGUF files; choose one with --file: {}", names.join(", ")));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn is_shard(f: &str) -> bool {
    f.starts_with("model-") && f.ends_with(".safetensors") && !f.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_configs_modules_and_one_set_of_weights() {
        let l = list(&[
            "config.json",
            "tokenizer.json",
            "modules.json",
            "1_Pooling/config.json",
            "README.md",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "openvino/config.json",
        ]);
        assert_eq!(
            select_files(&l, None).unwrap(),
            list(&["1_Pooling/config.json", "config.json", "model.safetensors", "modules.json", "tokenizer.json"])
        );
        let sharded = list(&[
            "config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ]);
        assert_eq!(select_files(&sharded, None).unwrap().len(), 4);
        let bin = list(&["config.json", "pytorch_model.bin"]);
        assert!(select_files(&bin, None).unwrap_err().contains("pickled"));
        let ggufs = list(&["a.Q4_1.gguf", "a.Q8_0.gguf"]);
        assert!(select_files(&ggufs, None).unwrap_err().contains("--file"));
        assert_eq!(select_files(&ggufs, Some("a.Q8_0.gguf")).unwrap(), list(&["a.Q8_0.gguf"]));
        assert!(select_files(&ggufs, Some("nope.gguf")).is_err());
    }
}
