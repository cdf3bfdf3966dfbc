//! `aiserve pull` against a local Hugging Face cache laid out exactly as `huggingface_hub`
//! writes it (`models--org--name/{refs,snapshots,blobs}`, snapshot files symlinked to blobs):
//! offline, with the hub unreachable, and the refusals.

use std::path::Path;
use std::process::{Command, Output};

const ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Puts `files` (name, source path) into `hf_home` as revision `main` of `id`.
fn cache_model(hf_home: &Path, id: &str, files: &[(&str, &Path)]) {
    let base = hf_home.join("hub").join(format!("models--{}", id.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(base.join("refs")).unwrap();
    std::fs::write(base.join("refs/main"), commit).unwrap();
    for (i, (name, src)) in files.iter().enumerate() {
        let blob = base.join("blobs").join(format!("etag{i}"));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(src, &blob).unwrap();
        let link = base.join("snapshots").join(commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&blob, &link).unwrap();
    }
}

fn minilm_cache(hf_home: &Path) {
    let m = crate::assets_dir().join("minilm");
    let names = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "model.safetensors",
        "README.md",
        "vocab.txt",
    ];
    let files: Vec<(&str, std::path::PathBuf)> = names.iter().map(|n| (*n, m.join(n))).collect();
    let refs: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    cache_model(hf_home, ID, &refs);
}

fn pull(hf_home: &Path, repo: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aiserve"))
        .arg("pull")
        .args(extra)
        .arg("--repo")
        .arg(repo)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn pulls_from_the_cache_offline_and_when_the_hub_is_unreachable() {
    let (hf, repo) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    minilm_cache(hf.path());
    let out = pull(hf.path(), repo.path(), &[("HF_HUB_OFFLINE", "1")], &[ID]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("as all-minilm-l6-v2 version 1"), "{stdout}");
    let v1 = repo.path().join("all-minilm-l6-v2/1");
    assert!(v1.join("model.safetensors").is_file() && v1.join("1_Pooling/config.json").is_file());
    assert!(!v1.join("README.md").exists(), "only serving files are copied");
    // The published copy is what the server loads: it describes as a 384-d embedder.
    use aiserve_core::ModelLoader;
    let d =
        aiserve_models::CandleLoader::cpu().describe(&v1, &aiserve_core::config::ModelConfig::new_default()).unwrap();
    assert!(matches!(d, aiserve_core::Description::Embedder { ref info, .. } if info.dim == 384));

    // Online mode with the hub unreachable falls back to the cache (as huggingface_hub does).
    let out = pull(hf.path(), repo.path(), &[("HF_ENDPOINT", "http://127.0.0.1:9")], &[ID, "--name", "minilm"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(repo.path().join("minilm/1/tokenizer.json").is_file());
}

#[test]
fn refuses_what_it_cannot_serve_and_publishes_nothing() {
    let (hf, repo) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = crate::assets_dir().join("minilm");
    // Pickled weights only.
    cache_model(
        hf.path(),
        "org/pickled",
        &[("config.json", &m.join("config.json")), ("pytorch_model.bin", &m.join("vocab.txt"))],
    );
    let out = pull(hf.path(), repo.path(), &[("HF_HUB_OFFLINE", "1")], &["org/pickled"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pickled"), "{}", String::from_utf8_lossy(&out.stderr));
    // Weights present but no tokenizer: downloaded, checked, refused before publishing.
    cache_model(
        hf.path(),
        "org/notok",
        &[("config.json", &m.join("config.json")), ("model.safetensors", &m.join("model.safetensors"))],
    );
    let out = pull(hf.path(), repo.path(), &[("HF_HUB_OFFLINE", "1")], &["org/notok"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot be served") && stderr.contains("tokenizer.json"),
        "{stderr}"
    );
    assert!(!repo.path().join("notok/1").exists(), "nothing published");
    let leftovers: Vec<_> = std::fs::read_dir(repo.path().join("notok")).unwrap().collect();
    assert!(leftovers.is_empty(), "staging directory removed");
    // Not in the cache at all.
    let out = pull(hf.path(), repo.path(), &[("HF_HUB_OFFLINE", "1")], &["org/absent"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the Hugging Face cache"));
}

#[test]
fn pulls_one_gguf_quantisation_as_a_generation_model() {
    let (hf, repo) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gguf = crate::assets_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let readme = crate::assets_dir().join("minilm/README.md");
    let id = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
    let files = [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", gguf.as_path()),
        ("SmolLM2-135M-Instruct.Q8_0.gguf", gguf.as_path()),
        ("README.md", readme.as_path()),
    ];
    cache_model(hf.path(), id, &files);
    // Several quantisations: the user must say which.
    let out = pull(hf.path(), repo.path(), &[("HF_HUB_OFFLINE", "1")], &[id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--file"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = pull(
        hf.path(),
        repo.path(),
        &[("HF_HUB_OFFLINE", "1")],
        &[id, "--file", "SmolLM2-135M-Instruct.Q4_1.gguf", "--name", "smollm2"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v1 = repo.path().join("smollm2/1");
    assert!(v1.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file() && !v1.join("README.md").exists());
    use aiserve_core::ModelLoader;
    let d =
        aiserve_models::CandleLoader::cpu().describe(&v1, &aiserve_core::config::ModelConfig::new_default()).unwrap();
    assert!(
        matches!(d, aiserve_core::Description::Generator(ref s) if s.chat_template.is_some() && s.info.vocab_size == 49152)
    );
}
