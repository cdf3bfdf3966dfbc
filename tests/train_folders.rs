//! `aiserve train image-classifier` on picture folders: Fashion-MNIST (Debian's
//! dataset-fashion-mnist, fetched by `.ci/fetch-fashion-mnist.sh` into the asset cache) laid out
//! as one folder of PNGs per class, trained to the bar, published with the folder names
//! as labels; and the clear errors for folders that cannot be trained on.

use std::path::Path;
use std::process::Command;

use rayon::prelude::*;

fn aiserve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aiserve"))
}

/// The Fashion-MNIST IDX directory, fetched on first use.
fn fashion_dir() -> std::path::PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/fetch-fashion-mnist.sh");
    let out =
        Command::new("bash").arg(script).arg(crate::assets_dir()).output().expect("running fetch-fashion-mnist.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Zalando's class names, as folder names.
const CLASSES: [&str; 10] =
    ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"];

/// Writes a split as `<dir>/<class>/<index>.png`.
fn write_folders(split: &aiserve_models::mnist::Split, dir: &Path) {
    for c in CLASSES {
        std::fs::create_dir_all(dir.join(c)).unwrap();
    }
    let len = split.image_len();
    (0..split.len()).into_par_iter().for_each(|i| {
        let px = split.images[i * len..(i + 1) * len].to_vec();
        let img = image::GrayImage::from_raw(split.cols as u32, split.rows as u32, px).unwrap();
        img.save(dir.join(CLASSES[split.labels[i] as usize]).join(format!("{i:05}.png"))).unwrap();
    });
}

#[test]
fn fashion_mnist_folders_train_past_ninety_percent() {
    let data = aiserve_models::mnist::load_dir(&fashion_dir()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (train, test, repo) = (tmp.path().join("train"), tmp.path().join("test"), tmp.path().join("repo"));
    write_folders(&data.train, &train);
    write_folders(&data.test, &test);
    let out = aiserve()
        .args(["train", "image-classifier", "--model", "fashion", "--epochs", "8", "--quiet", "--seed", "3"])
        .arg("--data")
        .arg(&train)
        .arg("--test-data")
        .arg(&test)
        .arg("--repo")
        .arg(&repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("read 60000 pictures of 10 classes") && stdout.contains("as 28x28x1"), "{stdout}");
    assert!(stdout.contains("validation loss"), "per-epoch validation: {stdout}");
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy "))
        .and_then(|l| l.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {stdout}"));
    println!("Fashion-MNIST test accuracy {acc}% after 8 epochs");
    assert!(acc >= 90.0, "Fashion-MNIST test accuracy {acc}% is under the 90% bar\n{stdout}");
    let dir = repo.join("fashion/1");
    let cfg = aiserve_core::backend::read_version_config(&dir).unwrap();
    let mut sorted = CLASSES.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(cfg.labels, sorted, "labels are the folder names, in the order of the outputs");
    assert_eq!((cfg.input.shape, cfg.output.shape), ([28, 28, 1], [10]));
    assert_eq!(cfg.input.background, 0.0, "light clothes on black: uploads on white are inverted to match");
    let t = cfg.training.unwrap();
    assert_eq!((t.seed, t.epochs, t.train_examples), (3, 8, 48_000));
    assert!((t.test_accuracy * 100.0 - acc).abs() < 0.01);
    assert!(image::open(dir.join("confusion.png")).is_ok() && image::open(dir.join("curves.png")).is_ok());
    let weights = dir.join("model.safetensors");
    let cnn = aiserve_models::digits::CnnShape { height: 28, width: 28, channels: 1, classes: 10 };
    assert!(aiserve_models::digits::DigitsCnn::load(&weights, cnn, &candle_device()).is_ok());
}

fn candle_device() -> candle_core::Device {
    candle_core::Device::Cpu
}

#[test]
fn image_classifier_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], data: &Path| {
        let out = aiserve()
            .args(["train", "image-classifier", "--repo"])
            .arg(tmp.path().join("repo"))
            .args(args)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let data = tmp.path().join("pictures");
    std::fs::create_dir_all(data.join("cat")).unwrap();
    image::GrayImage::new(12, 12).save(data.join("cat/1.png")).unwrap();
    let err = run(&[], &data);
    assert!(err.contains("--model NAME is required"), "{err}");
    let err = run(&["--model", "pets"], &data);
    assert!(err.contains("only one class folder (\"cat\")"), "{err}");
    std::fs::create_dir_all(data.join("dog")).unwrap();
    let err = run(&["--model", "pets"], &data);
    assert!(err.contains("holds no PNG or JPEG picture") && err.contains("dog"), "{err}");
    std::fs::write(data.join("dog/2.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    let err = run(&["--model", "pets"], &data);
    assert!(err.contains("unreadable") && err.contains("2.jpg"), "{err}");
}
