//! SentencePiece vocabularies of GGUF files (`tokenizer.ggml.model = "llama"`: Gemma, Llama 2,
//! Mistral 7B v0.1–0.3, TinyLlama), rebuilt as a `tokenizers` BPE.
//!
//! A GGUF holds such a vocabulary as pieces with scores and types, no merges. llama.cpp encodes
//! it by starting from single characters and repeatedly joining the adjacent pair whose joined
//! text is a piece of the highest score (leftmost on ties); characters no piece covers become
//! their UTF-8 bytes' `<0xNN>` pieces. A BPE whose merges are every way of splitting a piece in
//! two, ranked by the joined piece's score, makes the same choices (what transformers'
//! SentencePiece converter does), with byte fallback for the rest. Spaces are spelled `▁`;
//! where the vocabulary says `add_space_prefix`, each run of text gets one in front, as
//! llama.cpp does after every special token. Control and user-defined pieces (`<start_of_turn>`,
//! Gemma's runs of newlines and spaces) are matched in the raw text before all that, as
//! llama.cpp does; control pieces are left out of decoded text, user-defined ones are kept.

use std::collections::HashMap;

use aiserve_core::LoadError;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

/// GGUF `tokenizer.ggml.token_type` values.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const BYTE: i32 = 6;

/// The longest piece (in characters) that merges make.
const MAX_MERGED_CHARS: usize = 64;

/// SentencePiece's spelling of a space.
const SPACE: &str = "\u{2581}";

/// The tokenizer of a SentencePiece vocabulary: `pieces[i]` of score `scores[i]` and GGUF type
/// `types[i]` is token `i`.
pub fn tokenizer(
    pieces: &[String],
    scores: &[f32],
    types: &[i32],
    add_space_prefix: bool,
) -> Result<Tokenizer, LoadError> {
    if scores.len() != pieces.len() || types.len() != pieces.len() {
        return Err(LoadError::Config(format!(
            "GGUF SentencePiece vocabulary has {} pieces, {} scores and {} types",
            pieces.len(),
            scores.len(),
            types.len()
        )));
    }
    // A text names its last id, as llama.cpp's lookup does.
    let vocab: HashMap<String, u32> = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
    let missing_bytes = (0..=255u8).filter(|b| !vocab.contains_key(&format!("<0x{b:02X}>"))).count();
    if missing_bytes > 0 {
        return Err(LoadError::Unsupported(format!(
            "GGUF SentencePiece vocabulary without byte fallback ({missing_bytes} of the 256 `<0xNN>` pieces missing)"
        )));
    }
    // Every split of a piece into two pieces, ranked by the piece's score (ties: lower id,
    // then shorter left part, so the order is the same on every load). Pieces longer than
    // MAX_MERGED_CHARS are not made by merges (SentencePiece trains pieces of at most 16
    // characters; a file with very long ones would otherwise cost the square of their length).
    let mut merges: Vec<(f32, u32, usize, &str, &str)> = Vec::new();
    for (id, piece) in pieces.iter().enumerate() {
        if matches!(types[id], BYTE | UNKNOWN)
            || vocab.get(piece) != Some(&(id as u32))
            || piece.chars().nth(MAX_MERGED_CHARS).is_some()
        {
            continue;
        }
        for (k, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(k);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                merges.push((scores[id], id as u32, k, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> =
        merges.into_iter().map(|(_, _, _, l, r)| (l.to_owned(), r.to_owned())).collect();
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges)
        .byte_fallback(true);
    if let Some(unk) = types.iter().position(|t| *t == UNKNOWN) {
        bpe = bpe.unk_token(pieces[unk].clone());
    }
    let bpe = bpe.build().map_err(|e| LoadError::Config(format!("GGUF SentencePiece vocabulary: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let space = Replace::new(" ", SPACE).map_err(|e| LoadError::Config(format!("SentencePiece normalizer: {e}")))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE.into()).into(), space.into()]).into()
    } else {
        space.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| LoadError::Config(format!("SentencePiece normalizer: {e}")))?;
    let unspace = tokenizers::decoders::DecoderWrapper::Replace(
        Replace::new(SPACE, " ").map_err(|e| LoadError::Config(format!("SentencePiece decoder: {e}")))?,
    );
    let mut decoders: Vec<DecoderWrapper> = vec![unspace, ByteFallback::new().into(), Fuse::new().into()];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    // Control pieces are special (matched in prompts, left out of decoded text); user-defined
    // ones are plain text matched whole before the merges.
    let added: Vec<AddedToken> = pieces
        .iter()
        .zip(types)
        .filter(|(_, t)| matches!(**t, CONTROL | USER_DEFINED))
        .map(|(p, t)| AddedToken::from(p.clone(), *t == CONTROL).normalized(false))
        .collect();
    let bad = |e: tokenizers::Error| LoadError::Config(format!("GGUF special pieces: {e}"));
    tokenizer.add_special_tokens(added.iter().filter(|t| t.special).cloned().collect::<Vec<_>>()).map_err(bad)?;
    tokenizer.add_tokens(added.into_iter().filter(|t| !t.special).collect::<Vec<_>>()).map_err(bad)?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: control `<s>`, the 256 byte pieces, user-defined `\n\n`, and pieces
    /// whose scores decide between competing merges.
    fn tiny(add_space_prefix: bool) -> Tokenizer {
        let mut pieces: Vec<(String, f32, i32)> =
            vec![("<unk>".into(), 0.0, UNKNOWN), ("<s>".into(), 0.0, CONTROL), ("\n\n".into(), 0.0, USER_DEFINED)];
        pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
        for (p, s) in [
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("▁", -1.0),
            ("ab", -5.0),
            ("bc", -3.0),
            ("abc", -4.0),
            ("▁a", -2.0),
            ("é", -1.0),
        ] {
            pieces.push((p.into(), s, NORMAL));
        }
        let (p, s, t): (Vec<String>, Vec<f32>, Vec<i32>) =
            pieces.into_iter().fold((vec![], vec![], vec![]), |(mut p, mut s, mut t), (a, b, c)| {
                p.push(a);
                s.push(b);
                t.push(c);
                (p, s, t)
            });
        tokenizer(&p, &s, &t, add_space_prefix).unwrap()
    }

    fn pieces(t: &Tokenizer, text: &str) -> Vec<String> {
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        ids.iter().map(|id| t.id_to_token(*id).unwrap()).collect()
    }

    #[test]
    fn merges_follow_scores_and_bytes_fall_back() {
        let t = tiny(false);
        // "bc" (-3) joins before "ab" (-5), then "a" + "bc" makes "abc" (-4).
        assert_eq!(pieces(&t, "abc"), ["abc"]);
        // Spaces are `▁`; "▁a" (-2) joins before anything else.
        assert_eq!(pieces(&t, "c a"), ["c", "▁a"]);
        // A character with no piece: its UTF-8 bytes.
        assert_eq!(pieces(&t, "aü"), ["a", "<0xC3>", "<0xBC>"]);
        // User-defined and control pieces are matched whole in the raw text.
        assert_eq!(pieces(&t, "a\n\n<s>b"), ["a", "\n\n", "<s>", "b"]);
        // Decoding: bytes fused back into characters, control pieces left out.
        let ids = t.encode("c aü\n\n<s>", false).unwrap().get_ids().to_vec();
        assert_eq!(t.decode(&ids, true).unwrap(), "c aü\n\n");
    }

    #[test]
    fn a_space_prefix_goes_before_each_run_of_text() {
        let t = tiny(true);
        assert_eq!(pieces(&t, "a"), ["▁a"]);
        // After a special piece, the next run gets its own prefix (llama.cpp's `is_prev_special`).
        assert_eq!(pieces(&t, "a<s>a"), ["▁a", "<s>", "▁a"]);
        let ids = t.encode("a c", false).unwrap().get_ids().to_vec();
        assert_eq!(t.decode(&ids, true).unwrap(), "a c");
    }
}
