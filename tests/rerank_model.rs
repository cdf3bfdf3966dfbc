//! Cross-encoders (rerankers) through the real loader and server: a tiny seeded
//! `BertForSequenceClassification` written here with all-MiniLM-L6-v2's real WordPiece tokenizer
//! (fetched by `../shared/fetch-assets.sh`). The numbers themselves are checked against an
//! independent NumPy forward pass in `tests/clients/encoders_check.py`; this checks what the
//! loader reads, how pairs are joined and cut, that a pair scores the same alone and packed with
//! others, and the rerank route's behaviour against the KServe scores.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiserve_core::config::ModelConfig;
use aiserve_core::text::{PairTokens, ScoreActivation};
use aiserve_core::{Description, LoadError, Loaded, ModelLoader};
use aiserve_models::CandleLoader;
use serde_json::{json, Value};

const HIDDEN: usize = 8;
const VOCAB: usize = 30522; // MiniLM's WordPiece vocabulary
const POSITIONS: usize = 48;

/// Seeded normal-ish values (sum of uniforms) from a small LCG.
fn values(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..4 {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s += (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            s * scale
        })
        .collect()
}

/// A two-layer BERT cross-encoder with `labels` outputs in `dir`; `id2label` as given.
fn write_cross_encoder(dir: &Path, labels: usize, id2label: Value) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 7u64;
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: &str, shape: &[usize], scale: f32, offset: f32| {
        let n = shape.iter().product();
        let v = values(&mut seed, n, scale).into_iter().map(|x| x + offset).collect();
        t.push((name.to_owned(), shape.to_vec(), v));
    };
    let h = HIDDEN;
    add("bert.embeddings.word_embeddings.weight", &[VOCAB, h], 0.8, 0.0);
    add("bert.embeddings.position_embeddings.weight", &[POSITIONS, h], 0.8, 0.0);
    add("bert.embeddings.token_type_embeddings.weight", &[2, h], 0.8, 0.0);
    add("bert.embeddings.LayerNorm.weight", &[h], 0.1, 1.0);
    add("bert.embeddings.LayerNorm.bias", &[h], 0.1, 0.0);
    for l in 0..2 {
        let p = format!("bert.encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            add(&format!("{p}.attention.self.{part}.weight"), &[h, h], 0.8, 0.0);
            add(&format!("{p}.attention.self.{part}.bias"), &[h], 0.1, 0.0);
        }
        add(&format!("{p}.attention.output.dense.weight"), &[h, h], 0.8, 0.0);
        add(&format!("{p}.attention.output.dense.bias"), &[h], 0.1, 0.0);
        add(&format!("{p}.attention.output.LayerNorm.weight"), &[h], 0.1, 1.0);
        add(&format!("{p}.attention.output.LayerNorm.bias"), &[h], 0.1, 0.0);
        add(&format!("{p}.intermediate.dense.weight"), &[2 * h, h], 0.8, 0.0);
        add(&format!("{p}.intermediate.dense.bias"), &[2 * h], 0.1, 0.0);
        add(&format!("{p}.output.dense.weight"), &[h, 2 * h], 0.8, 0.0);
        add(&format!("{p}.output.dense.bias"), &[h], 0.1, 0.0);
        add(&format!("{p}.output.LayerNorm.weight"), &[h], 0.1, 1.0);
        add(&format!("{p}.output.LayerNorm.bias"), &[h], 0.1, 0.0);
    }
    add("bert.pooler.dense.weight", &[h, h], 0.8, 0.0);
    add("bert.pooler.dense.bias", &[h], 0.1, 0.0);
    add("classifier.weight", &[labels, h], 2.0, 0.0);
    add("classifier.bias", &[labels], 0.1, 0.0);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        t.into_iter().map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let config = json!({
        "architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": VOCAB,
        "hidden_size": h, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 2 * h,
        "hidden_act": "gelu", "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "id2label": id2label,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(crate::assets_dir().join("minilm/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
}

fn describe(dir: &Path) -> Result<Description, LoadError> {
    CandleLoader::cpu().describe(dir, &ModelConfig::new_default())
}

#[test]
fn cross_encoder_pairs_are_joined_cut_and_scored_alike_alone_and_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("1");
    write_cross_encoder(&dir, 1, json!({ "0": "relevant" }));
    let description = describe(&dir).unwrap();
    let Description::Scorer { info, tokenizer } = &description else { panic!("not recognised as a reranker") };
    assert_eq!((info.architecture.as_str(), info.max_tokens, info.vocab_size), ("bert", POSITIONS, VOCAB));
    assert_eq!((info.labels.clone(), info.activation), (vec!["relevant".to_owned()], ScoreActivation::Sigmoid));

    // [CLS] query [SEP] document [SEP], the second segment from the document's first token.
    let p = tokenizer.encode_pair("hello world", "a cat", false).unwrap();
    assert_eq!(p.ids.len(), 7, "{p:?}");
    assert_eq!((p.ids[0], p.ids[3], p.ids[6], p.second), (101, 102, 102, 4), "{p:?}");
    // Longest first: a long document loses tokens before the short query does.
    let long = "word ".repeat(100);
    let cut = tokenizer.encode_pair("hello world", &long, true).unwrap();
    assert_eq!((cut.ids.len(), cut.second, cut.ids[POSITIONS - 1]), (POSITIONS, 4, 102), "{cut:?}");
    assert_eq!(tokenizer.encode_pair("hello world", &long, false).unwrap().ids.len(), 105);

    let Loaded::Scorer(mut model) = CandleLoader::cpu().load(&dir, &description).unwrap() else { panic!() };
    let texts = ["a cat sat on the mat", "quantum chromodynamics", "cats", &long];
    let pairs: Vec<PairTokens> =
        texts.iter().map(|d| tokenizer.encode_pair("where is the cat", d, true).unwrap()).collect();
    let together = model.score(&pairs.iter().collect::<Vec<_>>()).unwrap();
    for (i, pair) in pairs.iter().enumerate() {
        let alone = model.score(&[pair]).unwrap();
        assert_eq!(alone[0].len(), 1);
        assert!(alone[0][0] > 0.0 && alone[0][0] < 1.0, "a sigmoid score: {}", alone[0][0]);
        assert!(
            (alone[0][0] - together[i][0]).abs() < 1e-6,
            "pair {i}: {} alone, {} packed",
            alone[0][0],
            together[i][0]
        );
    }
    let distinct: std::collections::BTreeSet<u32> = together.iter().map(|r| r[0].to_bits()).collect();
    assert_eq!(distinct.len(), texts.len(), "the seeded model tells the documents apart: {together:?}");
    // The token type matters: the same ids read as one segment score differently.
    let one_segment = PairTokens { ids: pairs[0].ids.clone(), second: pairs[0].ids.len() };
    assert_ne!(model.score(&[&one_segment]).unwrap()[0][0], together[0][0]);
}

#[test]
fn cross_encoder_configs_that_cannot_be_served_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("1");
    write_cross_encoder(&dir, 2, json!({ "0": "no", "2": "yes" }));
    let e = describe(&dir).err().expect("an id2label with a gap").to_string();
    assert!(e.contains("id2label") && e.contains("\"2\""), "{e}");

    // Three labels in config.json, a two-row classifier in the weights.
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut c = config.clone();
    c["id2label"] = json!({ "0": "a", "1": "b", "2": "c" });
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let d = describe(&dir).unwrap();
    let Description::Scorer { info, .. } = &d else { panic!() };
    assert_eq!(info.activation, ScoreActivation::Identity, "several labels: raw logits, as CrossEncoder");
    let e = CandleLoader::cpu().load(&dir, &d).err().expect("a head of the wrong width").to_string();
    assert!(e.contains("classifier.weight") && e.contains("3 labels"), "{e}");

    let mut c = config;
    c["id2label"] = json!({ "0": "a", "1": "b" });
    c["sentence_transformers"] = json!({ "activation_fn": "torch.nn.modules.activation.Tanh" });
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let e = describe(&dir).err().expect("an activation we do not run").to_string();
    assert!(e.contains("Tanh"), "{e}");
    c["sentence_transformers"] = json!({ "activation_fn": "torch.nn.modules.activation.Softmax" });
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let Description::Scorer { info, .. } = describe(&dir).unwrap() else { panic!() };
    assert_eq!(info.activation, ScoreActivation::Softmax);
}

#[test]
fn roberta_positions_start_past_the_padding_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(crate::assets_dir().join("minilm/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let config = json!({
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "vocab_size": VOCAB, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 514,
        "type_vocab_size": 1, "pad_token_id": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let Description::Embedder { info, .. } = describe(&dir).unwrap() else { panic!("not an embedder") };
    assert_eq!((info.architecture.as_str(), info.max_tokens), ("xlm-roberta", 512));
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    (status, resp.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default())
}

#[test]
fn rerank_route_orders_by_the_models_scores() {
    let repo = tempfile::tempdir().unwrap();
    write_cross_encoder(&repo.path().join("ranker/1"), 1, json!({ "0": "LABEL_0" }));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = aiserve_server::ServeOptions::new(repo.path().to_owned());
    let server = rt.spawn(aiserve_server::serve(opts, Arc::new(CandleLoader::cpu()), listener, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(addr, "GET", "/v2/models/ranker/ready", "").0 != 200 {
        assert!(Instant::now() < deadline, "the reranker never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let docs = ["a cat sat on the mat", "quantum chromodynamics", "cats", "the dog", "where is the cat"];
    let query = "where is the cat";

    // KServe: one query for all documents; the scores in document order.
    let kserve = json!({ "inputs": [
        { "name": "query", "datatype": "BYTES", "shape": [1], "data": [query] },
        { "name": "document", "datatype": "BYTES", "shape": [docs.len()], "data": docs },
    ]});
    let (s, v) = request(addr, "POST", "/v2/models/ranker/infer", &kserve.to_string());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([docs.len(), 1]));
    let scores: Vec<f64> = v["outputs"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));

    let body = json!({ "model": "ranker", "query": query, "documents": docs, "top_n": 3 });
    let (s, v) = request(addr, "POST", "/v1/rerank", &body.to_string());
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    let got: Vec<usize> = results.iter().map(|r| r["index"].as_u64().unwrap() as usize).collect();
    assert_eq!(got, order[..3], "{v}");
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        assert!((r["relevance_score"].as_f64().unwrap() - scores[i]).abs() < 1e-6, "{r}");
        assert_eq!(r["document"]["text"], docs[i]);
    }
    assert!(v["id"].as_str().unwrap().starts_with("rerank-") && v["usage"]["total_tokens"].as_u64().unwrap() > 10);

    // Pairs scored one by one (one query per document over KServe) equal the shared query's.
    let each = json!({ "inputs": [
        { "name": "document", "datatype": "BYTES", "shape": [2], "data": [docs[0], docs[1]] },
        { "name": "query", "datatype": "BYTES", "shape": [2], "data": [query, query] },
    ]});
    let (s, v) = request(addr, "POST", "/v2/models/ranker/infer", &each.to_string());
    assert_eq!(s, 200, "{v}");
    let pairwise: Vec<f64> = v["outputs"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((pairwise[0] - scores[0]).abs() < 1e-6 && (pairwise[1] - scores[1]).abs() < 1e-6);

    let long = "word ".repeat(100);
    let refusals: HashMap<&str, (Value, &str, u16)> = HashMap::from([
        ("too long", (json!({ "model": "ranker", "query": query, "documents": ["x", long] }), "documents[1]", 400)),
        ("long query", (json!({ "model": "ranker", "query": long, "documents": ["x", "y"] }), "query", 400)),
        ("no documents", (json!({ "model": "ranker", "query": query, "documents": [] }), "documents", 400)),
        ("bad document", (json!({ "model": "ranker", "query": query, "documents": [7] }), "documents[0]", 400)),
        ("no query", (json!({ "model": "ranker", "documents": ["x"] }), "query", 400)),
        ("top_n 0", (json!({ "model": "ranker", "query": "q", "documents": ["x"], "top_n": 0 }), "top_n", 400)),
        (
            "unknown field",
            (json!({ "model": "ranker", "query": "q", "documents": ["x"], "rank_fields": [] }), "rank_fields", 400),
        ),
        ("unknown model", (json!({ "model": "nope", "query": "q", "documents": ["x"] }), "", 404)),
    ]);
    for (what, (body, param, status)) in refusals {
        let (s, v) = request(addr, "POST", "/v1/rerank", &body.to_string());
        assert_eq!(s, status, "{what}: {v}");
        if !param.is_empty() {
            assert_eq!(v["error"]["param"], param, "{what}: {v}");
        }
    }
    let (s, v) = request(addr, "POST", "/v1/rerank", &json!({ "model": "ranker", "query": query, "documents": ["x", long], "truncate": true, "return_documents": false }).to_string());
    assert_eq!(s, 200, "{v}");
    assert!(v["results"].as_array().unwrap().iter().all(|r| r.get("document").is_none()), "{v}");
    let (s, v) = request(addr, "POST", "/v1/embeddings", &json!({ "model": "ranker", "input": "x" }).to_string());
    assert!(s == 400 && v["error"]["message"].as_str().unwrap().contains("reranker"), "{s} {v}");
    let (s, v) = request(
        addr,
        "POST",
        "/v2/models/ranker/infer",
        &json!({ "inputs": [
            { "name": "query", "datatype": "BYTES", "shape": [2], "data": ["a", "b"] },
            { "name": "document", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"] },
        ]})
        .to_string(),
    );
    assert!(s == 400 && v["error"].as_str().unwrap().contains("2 queries for 3 documents"), "{s} {v}");
    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
