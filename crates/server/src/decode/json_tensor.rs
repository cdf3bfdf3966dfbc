//! Nested or flat JSON arrays of numbers → (shape, row-major `f32` data).
//!
//! `[[1,2],[3,4]]` has shape `[2, 2]`; ragged nesting, non-numbers and nesting deeper than
//! [`MAX_DEPTH`] are errors that name the field and the position.

use serde_json::Value;

use crate::error::ApiError;

pub const MAX_DEPTH: usize = 8;

/// Flattens `value` (a number or nested arrays of numbers) and infers its shape.
pub fn flatten(value: &Value, field: &str) -> Result<(Vec<usize>, Vec<f32>), ApiError> {
    let mut shape = Vec::new();
    let mut cur = value;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        if shape.len() > MAX_DEPTH {
            return Err(ApiError::invalid(field, format!("`{field}` is nested deeper than {MAX_DEPTH} levels")));
        }
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let mut out = Vec::with_capacity(shape.iter().product());
    walk(value, &shape, 0, field, &mut out)?;
    Ok((shape, out))
}

fn walk(value: &Value, shape: &[usize], depth: usize, field: &str, out: &mut Vec<f32>) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => {
            if depth >= shape.len() || items.len() != shape[depth] {
                return Err(ApiError::invalid(
                    field,
                    format!("`{field}` is ragged: every array at depth {depth} must have the same length (first had {}, found {})",
                        shape.get(depth).copied().unwrap_or(0), items.len()),
                ));
            }
            items.iter().try_for_each(|v| walk(v, shape, depth + 1, field, out))
        }
        Value::Number(n) if depth == shape.len() => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        Value::Number(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` is ragged: found a number at depth {depth}, expected an array"),
        )),
        other => Err(ApiError::invalid(
            field,
            format!("`{field}` must contain only numbers; element {} is {}", out.len(), kind(other)),
        )),
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
    use serde_json::json;

    #[test]
    fn shapes() {
        assert_eq!(flatten(&json!([[1, 2, 3], [4, 5, 6]]), "x").unwrap(), (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        assert_eq!(flatten(&json!([0.5]), "x").unwrap(), (vec![1], vec![0.5]));
        assert_eq!(flatten(&json!(2), "x").unwrap(), (vec![], vec![2.0]));
        assert_eq!(flatten(&json!([]), "x").unwrap(), (vec![0], vec![]));
    }

    #[test]
    fn errors() {
        let e = flatten(&json!([[1, 2], [3]]), "image").unwrap_err().to_string();
        assert!(e.contains("ragged"), "{e}");
        let e = flatten(&json!([[1, 2], 3]), "image").unwrap_err().to_string();
        assert!(e.contains("ragged"), "{e}");
        let e = flatten(&json!([1, "2"]), "image").unwrap_err().to_string();
        assert!(e.contains("element 1 is a string"), "{e}");
        let e = flatten(&json!([[[[[[[[[[1]]]]]]]]]]), "image").unwrap_err().to_string();
        assert!(e.contains("deeper"), "{e}");
    }
}
