//! GGUF model files: header and metadata, the model shapes and the tokenizer rebuilt from them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(content) = candle_core::quantized::gguf_file::Content::read(&mut cursor) {
        let _ = aiserve_models::llm::gguf::config(&content);
        if let Ok(t) = aiserve_models::text::gguf_tokenizer::from_gguf(&content) {
            let _ = t.tokenizer.encode("Hello <|im_start|> 123", false);
        }
    }
});
