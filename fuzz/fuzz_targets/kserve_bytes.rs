//! KServe binary-extension BYTES elements (length-prefixed texts).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(texts) = aiserve_server::decode::bytes::decode_bytes_elements(data) {
        assert!(texts.iter().map(|t| t.len() + 4).sum::<usize>() == data.len());
    }
});
