//! PNG/JPEG uploads → model pixels (bounded decoding, resizing, inversion), under a memory hold.
#![no_main]
use aiserve_core::tensor::ImageSpec;
use aiserve_runtime::budget::MemoryBudget;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spec = ImageSpec { height: 28, width: 28, channels: 1, range: [0.0, 1.0], background: 0.0 };
    let hold = MemoryBudget::new(64 << 20).hold();
    if let Ok(pixels) = aiserve_server::decode::image::decode(data, &spec, "image", &hold) {
        assert_eq!(pixels.len(), 28 * 28);
        assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    }
});
