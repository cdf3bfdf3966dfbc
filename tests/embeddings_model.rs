//! The real all-MiniLM-L6-v2 (fetched by `../shared/fetch-assets.sh`) matches
//! sentence-transformers: identical token ids, cosine ≥ 0.9999 per sentence, and a text gives
//! the same vector alone and inside a batch of mixed lengths.

use aiserve_core::{Description, Loaded, ModelLoader};
use aiserve_models::CandleLoader;
use serde_json::Value;

fn reference() -> Value {
    let path = crate::shared_dir().join("reference/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    let parsed: Value = match v {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    parsed.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let dir = crate::assets_dir().join("minilm");
    let loader = CandleLoader::cpu();
    let description = loader.describe(&dir, &aiserve_core::config::ModelConfig::new_default()).unwrap();
    let Description::Embedder { info, tokenizer } = &description else { panic!("not recognised as an embedder") };
    assert_eq!((info.dim, info.max_tokens, info.normalize), (384, 256, true));
    assert_eq!(info.pooling, aiserve_core::text::Pooling::Mean);
    let Loaded::Embedder(mut model) = loader.load(&dir, &description).unwrap() else { panic!("wrong kind") };

    let reference = reference();
    let items = reference["items"].as_array().unwrap();
    let mut all_ids = Vec::new();
    for item in items {
        let ids = tokenizer.encode(item["sentence"].as_str().unwrap()).unwrap();
        let want: Vec<u32> = floats(&item["input_ids"]).iter().map(|&x| x as u32).collect();
        assert_eq!(ids, want, "token ids of {:?}", item["sentence"]);
        all_ids.push(ids);
    }
    // One at a time, then all five (mixed lengths) in one packed batch.
    let batch: Vec<&[u32]> = all_ids.iter().map(|v| v.as_slice()).collect();
    let together = model.embed(&batch).unwrap();
    for (i, item) in items.iter().enumerate() {
        let alone = model.embed(&[&all_ids[i]]).unwrap().remove(0);
        let want = floats(&item["embedding_normalized"]);
        let c = cosine(&alone, &want);
        assert!(c >= 0.9999, "sentence {i}: cosine {c}");
        let worst = alone.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-4, "sentence {i}: max |diff| {worst}");
        let same = alone.iter().zip(&together[i]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(same < 1e-5, "sentence {i}: batch vs alone differ by {same}");
    }
}

#[test]
fn minilm_truncates_to_its_limit_keeping_the_separator() {
    let dir = crate::assets_dir().join("minilm");
    let Description::Embedder { tokenizer, .. } =
        CandleLoader::cpu().describe(&dir, &aiserve_core::config::ModelConfig::new_default()).unwrap()
    else {
        panic!()
    };
    let long = "word ".repeat(400);
    assert_eq!(tokenizer.encode(&long).unwrap().len(), 402);
    let cut = tokenizer.encode_truncated(&long).unwrap();
    assert_eq!(cut.len(), 256);
    assert_eq!((cut[0], cut[255]), (101, 102), "[CLS] … [SEP] kept");
}
