//! JSON request bodies → tensors (`/classify`, KServe and TF Serving JSON inputs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok((shape, values)) = aiserve_server::decode::json_tensor::flatten(&v, "x") {
            assert_eq!(shape.iter().product::<usize>(), values.len());
        }
    }
});
