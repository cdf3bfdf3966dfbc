//! SmolLM2's tokenizer rebuilt from its GGUF metadata alone matches Hugging Face transformers'
//! own GGUF conversion (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`, transformers 5.24 +
//! gguf, run once; ids committed here): byte-level BPE, digits split one by one, special tokens.

use aiserve_models::text::gguf_tokenizer::read;

const CASES: &[(&str, &[u32])] = &[
    ("Hello, world!", &[19556, 28, 905, 17]),
    ("What is 2 + 2?", &[1780, 314, 216, 34, 1232, 216, 34, 47]),
    (
        "<|im_start|>user\nWhich city is the capital of France?<|im_end|>\n",
        &[1, 4093, 198, 14413, 2240, 314, 260, 3575, 282, 4649, 47, 2, 198],
    ),
    ("  spaces  and 12345 digits\ttab", &[216, 5600, 216, 284, 216, 33, 34, 35, 36, 37, 18638, 197, 15999]),
    ("héllo wörld 日本語", &[88, 2756, 31394, 267, 29989, 400, 17097, 241, 115, 40993, 179, 120, 248]),
];

#[test]
fn smollm2_tokenizer_from_gguf_matches_transformers() {
    let path = crate::assets_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let t = read(&path).unwrap();
    assert_eq!((t.bos, t.eos), (Some(1), Some(2)));
    assert!(t.chat_template.as_deref().unwrap().contains("You are a helpful AI assistant named SmolLM"));
    for (text, want) in CASES {
        let got = t.tokenizer.encode(*text, false).unwrap().get_ids().to_vec();
        assert_eq!(&got, want, "{text:?}");
        let round = t.tokenizer.decode(&got, false).unwrap();
        assert_eq!(&round, text, "decode(encode(x)) == x");
    }
    // Special tokens are skipped when decoding for users.
    let ids = t.tokenizer.encode("<|im_start|>assistant\nParis<|im_end|>", false).unwrap().get_ids().to_vec();
    assert_eq!(t.tokenizer.decode(&ids, true).unwrap(), "assistant\nParis");
}

/// A malformed GGUF the fuzzer found (a merge whose result is longer than any token) is refused
/// with a clear error; it used to panic inside the BPE builder.
#[test]
fn malformed_merges_are_refused_not_a_panic() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/gguf/merge-longer-than-any-token");
    let err = read(&path).err().expect("refused");
    assert!(err.to_string().contains("not in the vocabulary"), "{err}");
}

/// `logprobs[].bytes`: each token's own raw bytes, which concatenate to the text even where a
/// token holds only part of a character (its decoded text alone would be U+FFFD).
#[test]
fn token_bytes_are_the_raw_bytes_of_each_token() {
    use aiserve_core::generate::PromptTokenizer;
    let path = crate::assets_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let t = read(&path).unwrap();
    let tok = aiserve_models::llm::tokenizer::GenTokenizer::new(t.tokenizer, t.bos);
    let mut partial = 0;
    for (text, ids) in CASES.iter().filter(|(text, _)| !text.contains("<|")) {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
        assert_eq!(bytes, text.as_bytes(), "{text:?}");
        partial += ids.iter().filter(|&&id| std::str::from_utf8(&tok.token_bytes(id)).is_err()).count();
    }
    assert!(partial >= 2, "the CJK case splits characters across tokens");
}
