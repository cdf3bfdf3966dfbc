//! safetensors weight files: header parsing and tensor reads, as the loaders do them.
#![no_main]
use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = candle_core::safetensors::load_buffer(data, &Device::Cpu) {
        for t in tensors.values() {
            if t.elem_count() <= 1 << 20 {
                let _ = t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>());
            }
        }
    }
});
