//! How much memory parsing a JSON body into a `serde_json::Value` tree can take, measured from
//! the bytes that arrived before anything is parsed.
//!
//! A tree costs far more than its text: `0,` is 2 bytes of text and a 72-byte `Value` in a vector
//! that may have twice the room it needs; `{"a":0},` is 8 bytes and an index map of ~500. One
//! pass over the bytes (strings skipped by their quotes) counts the separators, containers and
//! string bytes, and [`tree_bytes`] turns them into a bound on the tree's heap use, which the
//! request's memory hold counts before `serde_json` allocates any of it. The bound is checked
//! against the real allocations in this module's tests.

/// One `Value` slot in a vector (72 bytes: objects keep their keys in order, in an index map),
/// three times over: while a vector grows, its old buffer and the new one of twice the size are
/// both live.
const PER_ELEMENT: usize = 3 * std::mem::size_of::<serde_json::Value>();
/// One object's first allocations (its index table and first entries) and the allocator's
/// rounding.
const PER_OBJECT: usize = 640;
/// Each key-value pair: its entry (hash, key, value) three times over as the entries grow, its
/// slot in the index table (an 8-byte index and a control byte, at most half full after a
/// doubling, twice over while it grows), plus the key's allocation overhead.
const PER_PAIR: usize = 3 * (8 + std::mem::size_of::<String>() + std::mem::size_of::<serde_json::Value>()) + 4 * 9 + 32;
/// An array's first buffer: room for four values, however few it holds (a vector's smallest
/// allocation), and the allocator's rounding.
const PER_ARRAY: usize = 4 * std::mem::size_of::<serde_json::Value>() + 32;
/// A string's allocation overhead.
const PER_ALLOCATION: usize = 32;

/// An upper bound on the heap bytes `serde_json::from_slice::<Value>(bytes)` allocates for the
/// tree it returns (and while building it). Cheap: one pass, no allocation.
pub fn tree_bytes(bytes: &[u8]) -> usize {
    let (mut commas, mut colons, mut arrays, mut objects, mut strings, mut string_bytes) = (0, 0, 0, 0, 0, 0);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                strings += 1;
                let start = i + 1;
                i = start;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                string_bytes += i.min(bytes.len()) - start;
            }
            b',' => commas += 1,
            b':' => colons += 1,
            b'[' => arrays += 1,
            b'{' => objects += 1,
            _ => {}
        }
        i += 1;
    }
    // Every value but the root follows a comma or opens its container.
    let elements = 1 + commas + arrays + objects;
    elements * PER_ELEMENT
        + objects * PER_OBJECT
        + colons * PER_PAIR
        + strings * PER_ALLOCATION
        + arrays * PER_ARRAY
        + string_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::alloc::peak_heap_during;

    fn check(text: &str) {
        let (value, peak) = peak_heap_during(|| serde_json::from_str::<serde_json::Value>(text).unwrap());
        let bound = tree_bytes(text.as_bytes());
        assert!(peak <= bound, "{} bytes of JSON peaked at {peak} heap bytes, bound {bound}", text.len());
        drop(value);
    }

    #[test]
    fn bounds_the_real_allocations_of_every_shape() {
        let n = 20_000;
        check(&format!("[{}]", vec!["0"; n].join(",")));
        check(&format!("[{}]", vec!["0.123456789"; n].join(",")));
        check(&format!("[{}]", vec!["[]"; n].join(",")));
        check(&format!("[{}]", vec!["[0]"; n].join(",")));
        check(&format!("[{}]", vec!["{}"; n].join(",")));
        check(&format!("[{}]", vec![r#"{"a":0}"#; n].join(",")));
        check(&format!("{{{}}}", (0..n).map(|i| format!(r#""k{i}":0"#)).collect::<Vec<_>>().join(",")));
        check(&format!("[{}]", vec![r#""""#; n].join(",")));
        check(&format!("[{}]", vec![r#""\u00e9\n""#; n].join(",")));
        check(&format!("{}{}", "[".repeat(127), "]".repeat(127)));
        // The body that once aborted the server: its first elements claim 3000^4 numbers.
        let mut nested = "0".to_string();
        for _ in 0..4 {
            nested = format!("[{nested},{}]", vec!["0"; 3000].join(","));
        }
        check(&format!(r#"{{"image":{nested}}}"#));
        check(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#);
    }

    #[test]
    fn strings_are_skipped_whole() {
        // Separators inside strings are not structure; an escaped quote does not end one.
        assert_eq!(tree_bytes(br#""a,b:[{""#), tree_bytes(br#""abcdef""#));
        assert_eq!(tree_bytes(br#""\"""#), tree_bytes(br#""xx""#));
        // An unterminated string counts what is there.
        assert!(tree_bytes(br#""abc"#) >= 3);
    }
}
