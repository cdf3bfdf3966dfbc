//! The `aiserve` command line: training publishes a version; bad data fails with a clear message.

use std::process::Command;

fn aiserve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aiserve"))
}

#[test]
fn train_publishes_a_loadable_version_with_provenance() {
    let repo = tempfile::tempdir().unwrap();
    let out = crate::train_digits(
        repo.path(),
        &["--epochs", "1", "--limit-train", "640", "--limit-test", "200", "--seed", "5"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("epoch 1:") && stdout.contains("img/s"), "{stdout}");
    assert!(stdout.contains("published digits version 1"), "{stdout}");
    let dir = repo.path().join("digits/1");
    let cfg = aiserve_core::backend::read_version_config(&dir).unwrap();
    let t = cfg.training.unwrap();
    assert_eq!((t.epochs, t.batch_size, t.seed, t.train_examples), (1, 32, 5, 640));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics[0]["epoch"], 1);
    assert!(metrics[0]["test_accuracy"].as_f64().unwrap() > 0.5, "{metrics}");
    // The pictures for a person: curves and the confusion matrix, beside metrics.json.
    for (file, size) in [("curves.png", (1000, 420)), ("confusion.png", (650, 570))] {
        let img = image::open(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((img.width(), img.height()), size, "{file}");
    }
}

/// `--lr-schedule cosine --early-stopping 1`: recorded in the version's provenance, the rate of
/// every epoch in metrics.json, the kept epoch's accuracy reported; a schedule it does not know
/// is refused by name.
#[test]
fn train_schedule_and_early_stopping_are_recorded() {
    let repo = tempfile::tempdir().unwrap();
    let args = ["--epochs", "3", "--limit-train", "640", "--limit-test", "200", "--lr-schedule", "cosine"];
    let out = crate::train_digits(repo.path(), &[&args[..], &["--early-stopping", "1"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = repo.path().join("digits/1");
    let t = aiserve_core::backend::read_version_config(&dir).unwrap().training.unwrap();
    assert_eq!((t.lr_schedule.as_deref(), t.early_stopping), (Some("cosine"), Some(1)));
    let best = t.best_epoch.expect("the kept epoch is recorded");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    let epochs = metrics.as_array().unwrap();
    assert!(best <= epochs.len() && epochs.len() <= 3);
    assert_eq!(epochs[best - 1]["test_accuracy"].as_f64().unwrap(), t.test_accuracy, "the kept epoch's numbers");
    let rates: Vec<f64> = epochs.iter().map(|e| e["learning_rate"].as_f64().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[1] < w[0]) && rates[0] < 1e-3, "cosine decays: {rates:?}");
    let out = crate::train_digits(repo.path(), &["--lr-schedule", "linear"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected constant or cosine"), "{err}");
}

/// A real Ctrl-C (SIGINT) during epoch 2 saves a checkpoint and says how to go on; `--resume`
/// finishes the run, publishes, removes the checkpoint, and the model is bit for bit the one an
/// uninterrupted run makes.
#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes_the_same_model() {
    use std::io::BufRead;
    let (straight, stopped) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = ["--epochs", "3", "--limit-train", "6400", "--limit-test", "200", "--seed", "9"];
    let out = crate::train_digits(straight.path(), &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut child = aiserve()
        .args(["train", "digits", "--quiet"])
        .args(args)
        .arg("--data")
        .arg(crate::mnist_dir())
        .arg("--repo")
        .arg(stopped.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.by_ref().map(|l| l.unwrap()).find(|l| l.starts_with("epoch 1:"));
    assert!(first.is_some(), "no first epoch line");
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("run the same command with --resume"), "{err}");
    let model = stopped.path().join("digits");
    assert!(model.join(".checkpoint/state.json").exists() && !model.join("1").exists());
    let out = crate::train_digits(stopped.path(), &[&args[..], &["--resume"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resuming") && stdout.contains("published digits version 1"), "{stdout}");
    assert!(!model.join(".checkpoint").exists(), "the checkpoint goes once the version is published");
    let weights = |repo: &std::path::Path| std::fs::read(repo.join("digits/1/model.safetensors")).unwrap();
    let (a, b) = (weights(straight.path()), weights(stopped.path()));
    let (a, b) =
        (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
    for (name, t) in a.tensors() {
        assert_eq!(t.data(), b.tensor(&name).unwrap().data(), "`{name}` differs from the uninterrupted run's");
    }
    let out = crate::train_digits(stopped.path(), &[&args[..], &["--resume"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no checkpoint at"), "{err}");
}

#[test]
fn train_reports_bad_data_clearly() {
    let empty = tempfile::tempdir().unwrap();
    let out =
        aiserve().args(["train", "digits", "--repo", "/nonexistent"]).arg("--data").arg(empty.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing train-images-idx3-ubyte"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn serve_refuses_a_missing_repository() {
    let out = aiserve()
        .args(["serve", "--repo", "/nonexistent/models", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}

#[test]
fn serve_names_the_activation_widths_it_takes() {
    let out = aiserve()
        .args(["serve", "--activation-bits", "12", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value '12' for '--activation-bits") && err.contains("[possible values: 8, 16]"),
        "{err}"
    );
}
