//! MNIST IDX image and label files.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((n, rows, cols, pixels)) = aiserve_models::mnist::parse_images(Path::new("fuzz"), data) {
        assert_eq!(n * rows * cols, pixels.len());
    }
    if let Ok(labels) = aiserve_models::mnist::parse_labels(Path::new("fuzz"), data) {
        assert!(labels.iter().all(|l| *l <= 9));
    }
});
