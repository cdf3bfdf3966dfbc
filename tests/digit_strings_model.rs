//! The committed `models/digit-strings/1` (the seed's CNN + LSTM encoder-decoder) reads at least
//! 95% of test strings of 1 to 5 MNIST digits exactly, the strings composed only of the test
//! set's pictures, through the loader the server uses; served by the real binary, KServe v2
//! answers BYTES strings and per-position probabilities, and `/classify` reads a picture of dark
//! ink on paper of another size; `aiserve train digit-strings` publishes a version that loads.

use aiserve_core::{GraphModel, ModelLoader, Tensor, TensorData};
use aiserve_models::digit_strings::compose::Strings;
use aiserve_models::digit_strings::train::test_strings;
use aiserve_models::digit_strings::{HEIGHT, MAX_DIGITS, WIDTH};
use aiserve_models::{mnist, CandleLoader};
use serde_json::{json, Value};

use crate::ops::Server;

/// What the CLI reads after training: 5,000 strings with the default seed.
fn test_set() -> Strings {
    test_strings(&mnist::load_dir(&crate::mnist_dir()).unwrap(), 5_000, 42).unwrap()
}

fn load(dir: &std::path::Path) -> (Box<dyn GraphModel>, aiserve_core::GraphInfo) {
    let loader = CandleLoader::cpu();
    let description = loader.describe(dir, &aiserve_core::config::ModelConfig::new_default()).unwrap();
    let aiserve_core::Description::Graph(info) = description.clone() else { panic!("a reader is served as a graph") };
    let aiserve_core::Loaded::Graph(model) = loader.load(dir, &description).unwrap() else { panic!("not a graph") };
    (model, info)
}

fn pictures(strings: &Strings, idx: &[usize]) -> Tensor {
    let data = idx.iter().flat_map(|&i| strings.image(i).iter().map(|&p| p as f32 / 255.0)).collect();
    Tensor::new(vec![idx.len(), HEIGHT, WIDTH, 1], TensorData::F32(data)).unwrap()
}

fn texts(t: &Tensor) -> Vec<String> {
    let TensorData::Bytes(b) = &t.data else { panic!("text is BYTES") };
    b.iter().map(|s| String::from_utf8(s.clone()).unwrap()).collect()
}

fn digits_text(d: &[u8]) -> String {
    d.iter().map(|&d| char::from(b'0' + d)).collect()
}

#[test]
fn committed_reader_reads_95_percent_of_test_strings() {
    let dir = crate::bundled_repo().join("digit-strings/1");
    let (mut model, info) = load(&dir);
    assert_eq!(info.platform, "aiserve_candle");
    let test = test_set().with_lengths(1..=5);
    let all: Vec<usize> = (0..test.len()).collect();
    let mut exact = 0;
    for idx in all.chunks(256) {
        let out = model.run(vec![pictures(&test, idx)]).unwrap();
        for (text, &i) in texts(&out[0]).iter().zip(idx) {
            exact += usize::from(*text == digits_text(&test.digits[i]));
        }
    }
    let accuracy = exact as f64 / test.len() as f64;
    assert!(accuracy >= 0.95, "read {accuracy} of {} strings exactly", test.len());
    let cfg = aiserve_core::backend::read_version_config(&dir).unwrap();
    let recorded = cfg.training.unwrap().test_accuracy;
    // Another CPU may sum a product in another order: a string or two may read otherwise.
    assert!((recorded - accuracy).abs() < 2e-3, "config says {recorded}, measured {accuracy}");
}

/// A composed string drawn as a person would photograph it: dark ink on white paper, three
/// times larger, with a wide margin.
fn on_paper(strings: &Strings, i: usize) -> Vec<u8> {
    let (scale, pad) = (3u32, 40u32);
    let img = image::GrayImage::from_fn(WIDTH as u32 * scale + 2 * pad, HEIGHT as u32 * scale + 2 * pad, |x, y| {
        let (x, y) = (x.checked_sub(pad).map(|x| x / scale), y.checked_sub(pad).map(|y| y / scale));
        let ink = match (x, y) {
            (Some(x), Some(y)) if (x as usize) < WIDTH && (y as usize) < HEIGHT => {
                strings.image(i)[y as usize * WIDTH + x as usize]
            }
            _ => 0,
        };
        image::Luma([255 - ink])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

fn post(server: &Server, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let resp = server.request_bytes(&raw);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default())
}

#[test]
fn served_reader_answers_kserve_and_classify() {
    let server = Server::start(&[], &[]);
    let meta = {
        let resp = server.request("GET /v2/models/digit-strings HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        serde_json::from_str::<Value>(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    assert_eq!(meta["platform"], "aiserve_candle");
    assert_eq!(meta["inputs"], json!([{ "name": "image", "datatype": "FP32", "shape": [-1, 28, 128, 1] }]));
    assert_eq!(
        meta["outputs"],
        json!([
            { "name": "text", "datatype": "BYTES", "shape": [-1] },
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, MAX_DIGITS + 1] }
        ])
    );
    assert_eq!(meta["parameters"]["endpoints"], json!(["classify"]));

    let test = test_set().with_lengths(1..=5);
    let idx: Vec<usize> = (0..20).collect();
    let Tensor { data: TensorData::F32(values), .. } = pictures(&test, &idx) else { unreachable!() };
    let body =
        json!({ "inputs": [{ "name": "image", "datatype": "FP32", "shape": [20, 28, 128, 1], "data": values }] });
    let (status, v) = post(&server, "/v2/models/digit-strings/infer", "application/json", body.to_string().as_bytes());
    assert_eq!(status, 200, "{v}");
    let read: Vec<String> =
        v["outputs"][0]["data"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
    assert_eq!(
        (v["outputs"][0]["datatype"].as_str(), v["outputs"][1]["shape"].clone()),
        (Some("BYTES"), json!([20, 7]))
    );
    let right = idx.iter().filter(|&&i| read[i] == digits_text(&test.digits[i])).count();
    assert!(right >= 18, "{read:?}");
    // Each character's probability, then the end's; zeros past it.
    let probs = v["outputs"][1]["data"].as_array().unwrap();
    for (i, text) in read.iter().enumerate() {
        let row = &probs[i * 7..(i + 1) * 7];
        assert!(row[..=text.len()].iter().all(|p| p.as_f64().unwrap() > 0.0), "{row:?}");
        assert!(row[text.len() + 1..].iter().all(|p| p.as_f64() == Some(0.0)), "{row:?}");
    }

    // The same strings as photographs of paper, through /classify: read as the tensors were.
    let mut same = 0;
    for &i in &idx {
        let (status, v) = post(&server, "/classify?model=digit-strings", "image/png", &on_paper(&test, i));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["text"], v["label"]);
        let text = v["text"].as_str().unwrap();
        assert_eq!(v["probabilities"].as_array().unwrap().len(), text.len());
        same += usize::from(text == digits_text(&test.digits[i]));
    }
    assert!(same >= 18, "{same} of 20 read from paper");
    let (status, v) = post(&server, "/classify?model=digit-strings&top=3", "image/png", &on_paper(&test, 0));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("reads text"), "{v}");
    // A blank sheet holds no digits: an empty string, not an error.
    let blank = image::GrayImage::from_pixel(90, 60, image::Luma([250]));
    let mut png = Vec::new();
    blank.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let (status, v) = post(&server, "/classify?model=digit-strings", "image/png", &png);
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["text"].as_str(), v["probabilities"].clone()), (Some(""), json!([])), "{v}");
}

#[test]
fn train_digit_strings_publishes_a_version_that_loads() {
    let repo = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aiserve"))
        .args(["train", "digit-strings", "--quiet", "--epochs", "1", "--strings", "320", "--limit-test", "100"])
        .args(["--latent-dim", "32", "--seed", "3", "--early-stopping", "2", "--data"])
        .arg(crate::mnist_dir())
        .arg("--repo")
        .arg(repo.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("epoch 1:") && stdout.contains("strings read"), "{stdout}");
    assert!(stdout.contains("published digit-strings version 1"), "{stdout}");
    let dir = repo.path().join("digit-strings/1");
    let cfg = aiserve_core::backend::read_version_config(&dir).unwrap();
    let t = cfg.training.unwrap();
    assert_eq!((t.epochs, t.seed, t.train_examples), (1, 3, 256));
    assert_eq!((t.early_stopping, t.best_epoch), (Some(2), Some(1)));
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics[0]["val_string_accuracy"].is_number(), "{metrics}");
    for file in ["curves.png", "confusion.png"] {
        assert!(image::open(dir.join(file)).is_ok(), "{file}");
    }
    let (mut model, _) = load(&dir);
    let out = model.run(vec![Tensor::new(vec![1, 28, 128, 1], TensorData::F32(vec![0.0; 28 * 128])).unwrap()]).unwrap();
    assert!(texts(&out[0])[0].len() <= MAX_DIGITS);
}

/// A real Ctrl-C (SIGINT) during epoch 2 saves a checkpoint and says how to go on; `--resume`
/// finishes the run, publishes, removes the checkpoint, and the reader is bit for bit the one an
/// uninterrupted run makes; `--resume` with nothing to resume is refused.
#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes_the_same_reader() {
    use std::io::BufRead;
    let args =
        ["--quiet", "--epochs", "3", "--strings", "1600", "--limit-test", "50", "--latent-dim", "16", "--seed", "7"];
    let train = |repo: &std::path::Path, extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_aiserve"));
        c.args(["train", "digit-strings"]).args(args).args(extra).arg("--data").arg(crate::mnist_dir());
        c.arg("--repo").arg(repo);
        c
    };
    let (straight, stopped) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = train(straight.path(), &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = train(stopped.path(), &["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no checkpoint at"), "{err}");
    let mut child = train(stopped.path(), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().map(|l| l.unwrap()).any(|l| l.starts_with("epoch 1:")), "no first epoch line");
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("run the same command with --resume"), "{err}");
    let model = stopped.path().join("digit-strings");
    assert!(model.join(".checkpoint/state.json").exists() && !model.join("1").exists());
    let out = train(stopped.path(), &["--resume"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resuming") && stdout.contains("published digit-strings version 1"), "{stdout}");
    assert!(!model.join(".checkpoint").exists(), "the checkpoint goes once the version is published");
    let weights = |repo: &std::path::Path| std::fs::read(repo.join("digit-strings/1/model.safetensors")).unwrap();
    let (a, b) = (weights(straight.path()), weights(stopped.path()));
    let (a, b) =
        (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
    for (name, t) in a.tensors() {
        assert_eq!(t.data(), b.tensor(&name).unwrap().data(), "`{name}` differs from the uninterrupted run's");
    }
}

/// Requests that must be refused or answered, never take the server down: not pictures, too
/// many, a 4000x3 sliver, NaN pixels by the binary extension, wrong shapes and batch claims.
#[test]
fn reader_refuses_bad_requests_and_stays_up() {
    let server = Server::start(&[], &[]);
    let alive = |server: &Server| {
        let live = server.request("GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(live.starts_with("HTTP/1.1 200"), "liveness: {live}");
    };
    let path = "/classify?model=digit-strings";
    let (status, v) = post(&server, path, "image/png", b"not a picture at all");
    assert_eq!(status, 415, "{v}");
    let (status, v) = post(&server, path, "application/json", br#"{"image": "bm90IGEgcGljdHVyZQ=="}"#);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("not a PNG or JPEG"), "{v}");
    let many = json!({ "images": vec!["aGVsbG8="; 100_000] }).to_string();
    let (status, v) = post(&server, path, "application/json", many.as_bytes());
    assert!(status == 400 || status == 413, "{status} {v}");
    let sliver = image::GrayImage::from_fn(4000, 3, |x, _| image::Luma([if x % 7 == 0 { 0 } else { 255 }]));
    let mut png = Vec::new();
    sliver.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let (status, v) = post(&server, path, "image/png", &png);
    assert_eq!(status, 200, "{v}");
    alive(&server);
    let infer = "/v2/models/digit-strings/infer";
    for (shape, n) in
        [(json!([1, 28, 28, 1]), 784), (json!([100_000_000, 28, 128, 1]), 3584), (json!([0, 28, 128, 1]), 0)]
    {
        let body = json!({ "inputs": [{ "name": "image", "datatype": "FP32", "shape": shape, "data": vec![0.0; n] }] });
        let (status, v) = post(&server, infer, "application/json", body.to_string().as_bytes());
        assert_eq!(status, 400, "{shape}: {v}");
    }
    let nan: Vec<u8> =
        (0..2 * 28 * 128).flat_map(|i| if i % 3 == 0 { f32::NAN } else { f32::INFINITY }.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{ "name": "image", "datatype": "FP32", "shape": [2, 28, 128, 1], "parameters": { "binary_data_size": nan.len() } }]
    })
    .to_string();
    let mut raw = format!(
        "POST {infer} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\
         Inference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n{header}",
        header.len(),
        header.len() + nan.len()
    )
    .into_bytes();
    raw.extend_from_slice(&nan);
    let resp = String::from_utf8_lossy(&server.request_bytes(&raw)).into_owned();
    assert!(resp.starts_with("HTTP/1.1 200"), "NaN pixels read as some string: {resp}");
    alive(&server);
    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}\n{}", log.join("\n"));
}
