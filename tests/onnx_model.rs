//! The real PP-OCR ONNX networks (PyPI `rapidocr-onnxruntime==1.4.4`) served by the real binary
//! on ONNX Runtime from PyPI's wheel: declarations read from the graphs (all three spellings of an
//! open dimension come out as -1, the recogniser's `character` list in the metadata), the binary
//! KServe extension in and out, a picture's rows the same alone and inside a batch, requests of
//! different widths at once, and a server without the library that keeps serving the rest.
//! Equality with Python's onnxruntime is checked by `tests/clients/onnx_check.py`.

use serde_json::{json, Value};

use crate::ops::Server;

/// A repository with the three PP-OCR networks and the bundled digits model.
fn ocr_repo() -> tempfile::TempDir {
    let src = crate::rapidocr_dir();
    let repo = tempfile::tempdir().unwrap();
    for (model, file) in [
        ("det", "ch_PP-OCRv4_det_infer.onnx"),
        ("rec", "ch_PP-OCRv4_rec_infer.onnx"),
        ("cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    ] {
        let dir = repo.path().join(model).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        // `det` under Triton's default name, the others under their own (the one .onnx file).
        let name = if model == "det" { "model.onnx" } else { file };
        std::fs::copy(src.join(file), dir.join(name)).unwrap();
    }
    std::fs::write(repo.path().join("cls/model.toml"), "max_queue_delay_us = 20000\n").unwrap();
    let digits = repo.path().join("digits/1");
    std::fs::create_dir_all(&digits).unwrap();
    for f in std::fs::read_dir(crate::bundled_repo().join("digits/1")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, digits.join(f.file_name().unwrap())).unwrap();
    }
    repo
}

fn start(repo: &std::path::Path) -> Server {
    let lib = crate::onnxruntime_lib();
    Server::start_in(repo, &["--onnxruntime", lib.to_str().unwrap()], &[])
}

fn get(server: &Server, path: &str) -> Value {
    let resp = server.request(&format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{path}: {resp}");
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Deterministic picture values in [-1, 1] (PP-OCR's normalised range).
fn picture(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// One FP32 input `x` by the binary extension; the outputs (all binary) as (header, f32 rows).
fn infer(server: &Server, model: &str, shape: &[usize], x: &[f32]) -> (Value, Vec<Vec<f32>>) {
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": shape, "parameters": { "binary_data_size": bytes.len() } }],
        "parameters": { "binary_data_output": true }
    })
    .to_string();
    let mut raw = format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\
         Inference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
        header.len(),
        header.len() + bytes.len()
    )
    .into_bytes();
    raw.extend_from_slice(header.as_bytes());
    raw.extend_from_slice(&bytes);
    let resp = server.request_bytes(&raw);
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{model}: {head} {}", String::from_utf8_lossy(&resp[split..]));
    let json_len: usize =
        crate::ops::header(&format!("{head}\r\n\r\n"), "inference-header-content-length").unwrap().parse().unwrap();
    let body = &resp[split + 4..];
    let header: Value = serde_json::from_slice(&body[..json_len]).unwrap();
    let mut tail = &body[json_len..];
    let outputs = header["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let size = o["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
            let (mine, rest) = tail.split_at(size);
            tail = rest;
            mine.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        })
        .collect();
    (header, outputs)
}

/// One FP32 input `x` as KServe JSON; the whole response.
fn post_json(server: &Server, model: &str, shape: Value, data: Value) -> String {
    let body = json!({ "inputs": [{ "name": "x", "datatype": "FP32", "shape": shape, "data": data }] }).to_string();
    server.request(&format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[test]
fn pp_ocr_networks_serve_from_their_graphs() {
    let repo = ocr_repo();
    let server = start(repo.path());
    let rec = get(&server, "/v2/models/rec");
    assert_eq!(rec["platform"], "onnxruntime_onnx");
    // Named, empty ('?') and named again: every open size is -1.
    assert_eq!(rec["inputs"], json!([{ "name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1] }]));
    assert_eq!(rec["outputs"][0]["shape"], json!([-1, -1, 6625]));
    let characters = rec["parameters"]["graph"]["character"].as_str().unwrap();
    assert_eq!(characters.lines().count(), 6623, "PP-OCR's character list, from the graph's metadata");
    let cls = get(&server, "/v2/models/cls");
    assert_eq!(cls["outputs"][0]["shape"], json!([-1, 2]));
    assert_eq!(get(&server, "/v2/models/digits/ready")["ready"], true);

    // Detection: a probability map the size of the picture.
    let (h, out) = infer(&server, "det", &[1, 3, 64, 96], &picture(3 * 64 * 96, 1));
    assert_eq!(h["outputs"][0]["shape"], json!([1, 1, 64, 96]));
    assert!(out[0].iter().all(|p| (0.0..=1.0).contains(p)));

    // Recognition: one line alone and inside a batch of two gives the same rows.
    let per = 3 * 48 * 160;
    let (a, b) = (picture(per, 2), picture(per, 3));
    let (h, alone) = infer(&server, "rec", &[1, 3, 48, 160], &a);
    assert_eq!(h["outputs"][0]["shape"], json!([1, 20, 6625]));
    let both: Vec<f32> = a.iter().chain(&b).copied().collect();
    let (h, batch) = infer(&server, "rec", &[2, 3, 48, 160], &both);
    assert_eq!(h["outputs"][0]["shape"], json!([2, 20, 6625]));
    let worst = alone[0].iter().zip(&batch[0]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "row 0 alone vs in a batch differ by {worst}");
    for row in alone[0].chunks(6625) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "softmax rows sum to 1, got {sum}");
    }

    // Sizes the graph declares open but its operators cannot take: an empty line is refused by
    // ONNX Runtime as an invalid argument (400 with its reason, no source paths); a 3x5 picture
    // breaks an operator's broadcast inside the detector (ONNX Runtime's FAIL: a 500 with an
    // error id, as Triton answers). Neither disturbs the next request.
    let empty = post_json(&server, "rec", json!([1, 3, 48, 0]), json!([]));
    assert!(empty.starts_with("HTTP/1.1 400"), "{empty}");
    assert!(empty.contains("the model cannot run on these inputs") && empty.contains("Invalid input shape"), "{empty}");
    assert!(!empty.contains("onnxruntime_src"), "{empty}");
    let tiny = post_json(&server, "det", json!([1, 3, 3, 5]), json!(vec![0.5; 45]));
    assert!(tiny.starts_with("HTTP/1.1 500") && tiny.contains("internal error E"), "{tiny}");
    let (_, again) = infer(&server, "rec", &[1, 3, 48, 160], &a);
    assert_eq!(again[0], alone[0]);
    let (status, log) = server.stop();
    assert!(status.success(), "{log:?}");
}

#[test]
fn the_graph_rewrite_changes_rounding_only() {
    use aiserve_onnx::fuse::{fuse, Fused};
    let src = crate::rapidocr_dir();
    let counts = |file: &str| fuse(&std::fs::read(src.join(file)).unwrap()).unwrap().map(|(_, f)| f);
    // Every scale paddle2onnx wrote beside a convolution and every hard-swish is rewritten.
    let det = Fused { conv_scales: 56, hard_swish: 24, into_conv: 10, batch_norm: 14 };
    assert_eq!(counts("ch_PP-OCRv4_det_infer.onnx"), Some(det));
    let rec = Fused { conv_scales: 56, hard_swish: 28, into_conv: 12, batch_norm: 16 };
    assert_eq!(counts("ch_PP-OCRv4_rec_infer.onnx"), Some(rec));
    let cls = Fused { hard_swish: 18, ..Fused::default() };
    assert_eq!(counts("ch_ppocr_mobile_v2.0_cls_infer.onnx"), Some(cls));

    // The same networks as written (`fuse = false`) beside the rewritten ones, on ONNX Runtime.
    let repo = ocr_repo();
    for model in ["det", "rec"] {
        let plain = repo.path().join(format!("{model}_plain"));
        std::fs::create_dir_all(plain.join("1")).unwrap();
        for f in std::fs::read_dir(repo.path().join(model).join("1")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, plain.join("1").join(f.file_name().unwrap())).unwrap();
        }
        std::fs::write(plain.join("model.toml"), "[onnx]\nfuse = false\n").unwrap();
    }
    let server = start(repo.path());
    for (model, shape) in [("det", [1, 3, 96, 160]), ("rec", [2, 3, 48, 320])] {
        let x = picture(shape.iter().product(), 7);
        let (_, fused) = infer(&server, model, &shape, &x);
        let (_, plain) = infer(&server, &format!("{model}_plain"), &shape, &x);
        assert_eq!(fused[0].len(), plain[0].len());
        let worst = fused[0].iter().zip(&plain[0]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 2e-5, "{model}: rewritten and as written differ by {worst}");
    }
    let (_, log) = server.stop();
    let rewritten = |dir: &str| log.iter().any(|l| l.contains("graph rewritten") && l.contains(&format!("/{dir}/1/")));
    assert!(rewritten("det") && rewritten("rec") && rewritten("cls"), "{log:?}");
    assert!(!rewritten("det_plain") && !rewritten("rec_plain"), "{log:?}");
}

#[test]
fn concurrent_pictures_of_different_widths_are_answered_right() {
    let repo = ocr_repo();
    let server = start(repo.path());
    let widths = [96usize, 192, 96, 192, 96, 144];
    let alone: Vec<Vec<f32>> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| infer(&server, "cls", &[1, 3, 48, w], &picture(3 * 48 * w, i)).1.remove(0))
        .collect();
    let together: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let server = &server;
                s.spawn(move || infer(server, "cls", &[1, 3, 48, w], &picture(3 * 48 * w, i)).1.remove(0))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        let worst = a.iter().zip(t).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "request {i} (width {}): {a:?} vs {t:?}", widths[i]);
    }
    let metrics = server.request("GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(metrics.contains("aiserve_batch_rows_count{model=\"cls\""), "rows per pass are recorded");
    server.stop();
}

#[test]
fn without_onnx_runtime_onnx_versions_fail_and_the_rest_is_served() {
    let repo = ocr_repo();
    let server = Server::start_in(repo.path(), &["--onnxruntime", "/nonexistent/libonnxruntime.so"], &[]);
    let resp = server
        .request("POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    let index: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let row = |name: &str| index.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!(row("digits")["state"], "READY");
    let rec = row("rec");
    assert_eq!(rec["state"], "UNAVAILABLE", "{index}");
    let reason = rec["reason"].as_str().unwrap();
    assert!(
        reason.contains("/nonexistent/libonnxruntime.so") && reason.contains("pip install onnxruntime"),
        "{reason}"
    );
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn an_image_classifier_config_is_checked_against_the_graph() {
    let repo = ocr_repo();
    // PP-OCR's angle classifier as a picture classifier: 2 classes, but 3 labels.
    let cls = repo.path().join("cls");
    std::fs::write(
        cls.join("model.toml"),
        "[onnx.image]\nsize = [48, 192]\nchannels = \"BGR\"\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\nlabels = \"labels.txt\"\n",
    )
    .unwrap();
    std::fs::write(cls.join("1/labels.txt"), "0\n180\n270\n").unwrap();
    let server = start(repo.path());
    let resp = server
        .request("POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    let index: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let row = index.as_array().unwrap().iter().find(|r| r["name"] == "cls").cloned().unwrap();
    assert_eq!(row["state"], "UNAVAILABLE", "{index}");
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("2 classes but the labels file has 3 lines"), "{reason}");
    assert_eq!(get(&server, "/v2/models/rec/ready")["ready"], true, "the other versions serve");
    server.stop();
}
