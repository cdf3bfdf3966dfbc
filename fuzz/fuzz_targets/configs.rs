//! Configuration files: model.toml, config.toml, the API key file, a Hugging Face config.json.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = aiserve_core::config::ModelConfig::parse(text);
    let _ = aiserve_core::config::VersionConfig::parse(text);
    let _ = aiserve_server::auth::keys::parse(text, Default::default());
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = aiserve_models::text::bert::BertConfig::parse(&v);
    }
});
