//! Nested or flat JSON arrays of numbers → (shape, row-major `f32` data).
//!
//! `[[1,2],[3,4]]` has shape `[2, 2]`; ragged nesting, non-numbers and nesting deeper than
//! [`MAX_DEPTH`] are errors that name the field and the position. Count before allocating: the
//! shape is read from the first element at each level, the whole tree is then checked against
//! it without allocating (so an irregular array whose first elements claim 3000⁴ numbers is
//! refused as ragged), and only a regular tree, whose element count is what actually arrived,
//! is counted against the request's memory hold and copied out.

use serde_json::Value;

use crate::error::Error;
use aiserve_runtime::budget::Hold;

pub const MAX_DEPTH: usize = 8;

/// Flattens `value` (a number or nested arrays of numbers) and infers its shape.
pub fn flatten(value: &Value, field: &str, hold: &Hold) -> Result<(Vec<usize>, Vec<f32>), Error> {
    let mut shape = Vec::new();
    let mut cur = value;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        if shape.len() > MAX_DEPTH {
            return Err(Error::invalid(field, format!("`{field}` is nested deeper than {MAX_DEPTH} levels")));
        }
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let mut count = 0usize;
    check(value, &shape, 0, field, &mut count)?;
    hold.grow(count * size_of::<f32>(), &format!("the tensor `{field}`"))?;
    let mut out = Vec::with_capacity(count);
    push_all(value, &mut out);
    Ok((shape, out))
}

/// Checks that `value` is regular with `shape` and holds only numbers; counts the numbers.
fn check(value: &Value, shape: &[usize], depth: usize, field: &str, count: &mut usize) -> Result<(), Error> {
    match value {
        Value::Array(items) => {
            if depth >= shape.len() || items.len() != shape[depth] {
                return Err(Error::invalid(
                    field,
                    format!("`{field}` is ragged: every array at depth {depth} must have the same length (first had {}, found {})",
                        shape.get(depth).copied().unwrap_or(0), items.len()),
                ));
            }
            items.iter().try_for_each(|v| check(v, shape, depth + 1, field, count))
        }
        Value::Number(_) if depth == shape.len() => {
            *count += 1;
            Ok(())
        }
        Value::Number(_) => Err(Error::invalid(
            field,
            format!("`{field}` is ragged: found a number at depth {depth}, expected an array"),
        )),
        other => Err(Error::invalid(
            field,
            format!("`{field}` must contain only numbers; element {count} is {}", kind(other)),
        )),
    }
}

/// Copies the numbers of a tree [`check`] accepted, in row-major order.
fn push_all(value: &Value, out: &mut Vec<f32>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| push_all(v, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
        _ => {}
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiserve_runtime::budget::MemoryBudget;
    use serde_json::json;

    fn flat(v: &Value) -> Result<(Vec<usize>, Vec<f32>), Error> {
        flatten(v, "x", &MemoryBudget::new(1 << 30).hold())
    }

    #[test]
    fn shapes() {
        assert_eq!(flat(&json!([[1, 2, 3], [4, 5, 6]])).unwrap(), (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        assert_eq!(flat(&json!([0.5])).unwrap(), (vec![1], vec![0.5]));
        assert_eq!(flat(&json!(2)).unwrap(), (vec![], vec![2.0]));
        assert_eq!(flat(&json!([])).unwrap(), (vec![0], vec![]));
    }

    #[test]
    fn errors() {
        let hold = MemoryBudget::new(1 << 30).hold();
        let e = flatten(&json!([[1, 2], [3]]), "image", &hold).unwrap_err().to_string();
        assert!(e.contains("ragged"), "{e}");
        let e = flatten(&json!([[1, 2], 3]), "image", &hold).unwrap_err().to_string();
        assert!(e.contains("ragged"), "{e}");
        let e = flatten(&json!([1, "2"]), "image", &hold).unwrap_err().to_string();
        assert!(e.contains("element 1 is a string"), "{e}");
        let e = flatten(&json!([[[[[[[[[[1]]]]]]]]]]), "image", &hold).unwrap_err().to_string();
        assert!(e.contains("deeper"), "{e}");
        assert_eq!(hold.bytes(), 0, "refused trees hold nothing");
    }

    #[test]
    fn an_irregular_tree_claiming_trillions_is_refused_without_allocating() {
        // The body that aborted the server (24 KB asking for 3000^4 floats at the first reserve).
        let mut v = json!(0);
        for _ in 0..4 {
            let mut level = vec![v];
            level.extend(std::iter::repeat_n(json!(0), 2999));
            v = Value::Array(level);
        }
        let (result, peak) = crate::tests::alloc::peak_heap_during(|| flat(&v));
        let e = result.unwrap_err().to_string();
        assert!(e.contains("ragged"), "{e}");
        assert!(peak < 4096, "refusing it allocated {peak} bytes");
    }

    #[test]
    fn the_values_are_counted_against_the_hold() {
        let budget = MemoryBudget::new(1000);
        let hold = budget.hold();
        flatten(&json!([[1, 2], [3, 4]]), "x", &hold).unwrap();
        assert_eq!(hold.bytes(), 16);
        let big = Value::Array(vec![json!(0); 300]);
        assert!(matches!(flatten(&big, "x", &hold).unwrap_err(), Error::TooMuchMemory { .. }));
        let other = budget.hold();
        other.grow(980, "y").unwrap();
        assert!(matches!(flatten(&json!([1, 2, 3]), "x", &hold).unwrap_err(), Error::MemoryBusy { .. }));
    }
}
