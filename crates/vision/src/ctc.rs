//! Greedy CTC decoding: the recogniser gives, for each of T steps, a score per class; the text
//! is the best class of each step with repeats merged and the blank (class 0) dropped. PP-OCR's
//! classes are the blank, the model's character list (its `character` metadata, one per line),
//! then a space.

/// Decodes a recogniser's output rows into text.
#[derive(Clone, Debug)]
pub struct CtcDecoder {
    /// Class `i + 1`'s text (class 0 is the blank).
    symbols: Vec<String>,
}

/// One decoded line.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub text: String,
    /// The mean of the kept steps' best scores (0 when nothing is kept).
    pub confidence: f32,
}

impl CtcDecoder {
    /// PP-OCR's layout: blank, `characters`, then a space.
    pub fn pp_ocr(characters: impl IntoIterator<Item = String>) -> Self {
        let mut symbols: Vec<String> = characters.into_iter().collect();
        symbols.push(" ".into());
        Self { symbols }
    }

    /// Classes the decoder knows (blank included): what the recogniser's last dimension must be.
    pub fn classes(&self) -> usize {
        self.symbols.len() + 1
    }

    /// Decodes one line: `scores` is `[steps, classes]`, row-major, with `classes` equal to
    /// [`Self::classes`].
    pub fn decode(&self, scores: &[f32], classes: usize) -> Result<Decoded, String> {
        if classes != self.classes() {
            return Err(format!("the recogniser gives {classes} classes; its character list makes {}", self.classes()));
        }
        if classes == 0 || !scores.len().is_multiple_of(classes) {
            return Err(format!("{} scores are not whole rows of {classes} classes", scores.len()));
        }
        let (mut text, mut kept, mut sum) = (String::new(), 0usize, 0.0f64);
        let mut previous = usize::MAX;
        for row in scores.chunks_exact(classes) {
            let (best, score) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bs), (i, &s)| if s > bs { (i, s) } else { (bi, bs) });
            if best != 0 && best != previous {
                text.push_str(&self.symbols[best - 1]);
                kept += 1;
                sum += f64::from(score);
            }
            previous = best;
        }
        let confidence = if kept == 0 { 0.0 } else { (sum / kept as f64) as f32 };
        Ok(Decoded { text, confidence })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-hot-ish rows: `best` gets `p`, the rest share what is left.
    fn rows(steps: &[(usize, f32)], classes: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for &(best, p) in steps {
            let rest = (1.0 - p) / (classes - 1) as f32;
            out.extend((0..classes).map(|c| if c == best { p } else { rest }));
        }
        out
    }

    #[test]
    fn repeats_merge_and_blanks_split_them() {
        let d = CtcDecoder::pp_ocr(["a", "b", "中"].map(String::from));
        assert_eq!(d.classes(), 5);
        // a a _ a b b _ 中 ␠  ->  "aab中 "
        let steps = [(1, 0.9), (1, 0.8), (0, 0.99), (1, 0.7), (2, 0.6), (2, 0.9), (0, 0.9), (3, 0.5), (4, 0.8)];
        let out = d.decode(&rows(&steps, 5), 5).unwrap();
        assert_eq!(out.text, "aab中 ");
        // Kept steps: the first a (0.9), the a after the blank (0.7), the first b (0.6), 中, space.
        let want = (0.9 + 0.7 + 0.6 + 0.5 + 0.8) / 5.0;
        assert!((out.confidence - want).abs() < 1e-6, "{}", out.confidence);
    }

    #[test]
    fn nothing_but_blanks_is_empty_with_zero_confidence() {
        let d = CtcDecoder::pp_ocr(["a"].map(String::from));
        assert_eq!(
            d.decode(&rows(&[(0, 0.9), (0, 0.9)], 3), 3).unwrap(),
            Decoded { text: String::new(), confidence: 0.0 }
        );
        assert!(d.decode(&[0.0; 4], 4).unwrap_err().contains("character list makes 3"));
        assert!(d.decode(&[0.0; 4], 3).unwrap_err().contains("not whole rows"));
    }
}
