//! The committed `models/digits/1` meets the accuracy bar, through the same loader the server uses.

use aiserve_core::tensor::{BatchLimits, ImageSpec};
use aiserve_core::{ImageBatch, ModelLoader};
use aiserve_models::mnist;
use aiserve_models::CandleLoader;

#[test]
fn committed_model_reaches_99_percent_on_the_mnist_test_set() {
    let test = mnist::load_dir(&crate::mnist_dir()).unwrap().test;
    let dir = crate::bundled_repo().join("digits/1");
    let loader = CandleLoader::cpu();
    let description = loader.describe(&dir, &aiserve_core::config::ModelConfig::new_default()).unwrap();
    let aiserve_core::Loaded::Image(mut model) = loader.load(&dir, &description).unwrap() else {
        panic!("not an image model")
    };
    let aiserve_core::Description::Image(cfg) = description else { unreachable!() };
    let spec = ImageSpec::from(&cfg.input);
    let mut correct = 0;
    for (chunk, labels) in test.images.chunks(256 * 784).zip(test.labels.chunks(256)) {
        let data: Vec<f32> = chunk.iter().map(|&p| p as f32 / 255.0).collect();
        let batch =
            ImageBatch::from_tensor(&spec, "x", &[labels.len(), 784], data, BatchLimits { max_batch: 256 }).unwrap();
        let probs = model.predict(&batch).unwrap();
        for (p, &l) in probs.iter().zip(labels) {
            let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            correct += (best == l as usize) as usize;
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }
    let accuracy = correct as f64 / test.len() as f64;
    assert!(accuracy >= 0.99, "accuracy {accuracy}");
    // The recorded provenance matches what we measured.
    let recorded = cfg.training.unwrap().test_accuracy;
    assert!((recorded - accuracy).abs() < 1e-3, "config says {recorded}, measured {accuracy}");
}
