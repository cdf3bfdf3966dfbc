//! Nested or flat JSON arrays of numbers → (shape, row-major `f32` data), or, for graph models,
//! into values of the tensor's own datatype ([`flatten_as`]: integers must be whole and fit,
//! BOOL takes `true`/`false`).
//!
//! `[[1,2],[3,4]]` has shape `[2, 2]`; ragged nesting, non-numbers and nesting deeper than
//! [`MAX_DEPTH`] are errors that name the field and the position. Count before allocating: the
//! shape is read from the first element at each level, the whole tree is then checked against
//! it without allocating (so an irregular array whose first elements claim 3000⁴ numbers is
//! refused as ragged), and only a regular tree, whose element count is what actually arrived,
//! is counted against the request's memory hold and copied out.

use aiserve_core::{Datatype, TensorData};
use serde_json::Value;

use crate::error::Error;
use aiserve_runtime::budget::Hold;

pub const MAX_DEPTH: usize = 8;

/// Flattens `value` (a number or nested arrays of numbers) and infers its shape.
pub fn flatten(value: &Value, field: &str, hold: &Hold) -> Result<(Vec<usize>, Vec<f32>), Error> {
    let (shape, count) = measure(value, field, Leaf::Number)?;
    hold.grow(count * size_of::<f32>(), &format!("the tensor `{field}`"))?;
    let mut out = Vec::with_capacity(count);
    push_all(value, &mut out);
    Ok((shape, out))
}

/// Flattens `value` into values of `datatype` (not BYTES): numbers that fit it, or booleans
/// for BOOL; the element that does not fit is named.
pub fn flatten_as(
    value: &Value,
    datatype: Datatype,
    field: &str,
    hold: &Hold,
) -> Result<(Vec<usize>, TensorData), Error> {
    if datatype == Datatype::Bytes {
        return flatten_strings(value, field, hold);
    }
    let leaf = if datatype == Datatype::Bool { Leaf::Bool } else { Leaf::Number };
    let (shape, count) = measure(value, field, leaf)?;
    let width = datatype.width().unwrap_or(size_of::<Vec<u8>>());
    hold.grow(count * width, &format!("the tensor `{field}`"))?;
    let mut index = 0;
    macro_rules! typed {
        ($variant:ident, $conv:expr) => {{
            let mut out = Vec::with_capacity(count);
            push_typed(value, &mut out, &$conv, &mut index).map_err(|(j, v)| {
                Error::invalid(
                    field,
                    format!("`{field}` value {j} is {}, which is not a {datatype} value", crate::error::shown(v)),
                )
            })?;
            TensorData::$variant(out)
        }};
    }
    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Option<T> {
        match (v.as_i64(), v.as_u64()) {
            (_, Some(u)) => T::try_from(u).ok(),
            (Some(i), _) => T::try_from(i).ok(),
            _ => None,
        }
    }
    let data = match datatype {
        Datatype::Bool => typed!(Bool, |v: &Value| v.as_bool()),
        Datatype::Uint8 => typed!(U8, int::<u8>),
        Datatype::Uint16 => typed!(U16, int::<u16>),
        Datatype::Uint32 => typed!(U32, int::<u32>),
        Datatype::Uint64 => typed!(U64, int::<u64>),
        Datatype::Int8 => typed!(I8, int::<i8>),
        Datatype::Int16 => typed!(I16, int::<i16>),
        Datatype::Int32 => typed!(I32, int::<i32>),
        Datatype::Int64 => typed!(I64, int::<i64>),
        Datatype::Fp16 => typed!(F16, |v: &Value| v.as_f64().map(half::f16::from_f64)),
        Datatype::Bf16 => typed!(Bf16, |v: &Value| v.as_f64().map(half::bf16::from_f64)),
        Datatype::Fp32 => typed!(F32, |v: &Value| v.as_f64().map(|x| x as f32)),
        Datatype::Fp64 => typed!(F64, |v: &Value| v.as_f64()),
        Datatype::Bytes => unreachable!("returned above"),
    };
    Ok((shape, data))
}

/// Flattens nested arrays of strings (UTF-8 text, or TF Serving's `{"b64": "..."}` for raw
/// bytes) into BYTES elements.
pub fn flatten_strings(value: &Value, field: &str, hold: &Hold) -> Result<(Vec<usize>, TensorData), Error> {
    use base64::Engine;
    let (shape, count) = measure(value, field, Leaf::Text)?;
    let mut bytes = 0;
    walk(value, &mut |leaf| bytes += leaf.as_str().map_or_else(|| b64_of(leaf).map_or(0, |s| s.len()), str::len));
    hold.grow(count * size_of::<Vec<u8>>() + bytes, &format!("the BYTES tensor `{field}`"))?;
    let mut out = Vec::with_capacity(count);
    let mut bad = None;
    walk(value, &mut |leaf| match (leaf.as_str(), b64_of(leaf)) {
        (Some(s), _) => out.push(s.as_bytes().to_vec()),
        (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(v) => out.push(v),
            Err(_) => bad = bad.or(Some(out.len())),
        },
        _ => {}
    });
    if let Some(j) = bad {
        return Err(Error::invalid(field, format!("`{field}` element {j} is not valid base64")));
    }
    Ok((shape, TensorData::Bytes(out)))
}

/// `s` of `{"b64": s}`.
fn b64_of(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("b64").and_then(Value::as_str),
        _ => None,
    }
}

/// Calls `f` on each leaf, in row-major order.
fn walk<'v>(value: &'v Value, f: &mut dyn FnMut(&'v Value)) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| walk(v, f)),
        leaf => f(leaf),
    }
}

/// What the leaves of a tensor's JSON tree must be.
#[derive(Clone, Copy, PartialEq)]
enum Leaf {
    Number,
    Bool,
    /// Strings, or `{"b64": "..."}` objects.
    Text,
}

impl Leaf {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Leaf::Number => v.is_number(),
            Leaf::Bool => v.is_boolean(),
            Leaf::Text => v.is_string() || b64_of(v).is_some(),
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Leaf::Number => "numbers",
            Leaf::Bool => "booleans",
            Leaf::Text => "strings",
        }
    }
}

/// Copies the leaves of a tree [`measure`] accepted, converted; the first that does not
/// convert is returned with its index.
fn push_typed<'v, T>(
    value: &'v Value,
    out: &mut Vec<T>,
    conv: &dyn Fn(&Value) -> Option<T>,
    index: &mut usize,
) -> Result<(), (usize, &'v Value)> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| push_typed(v, out, conv, index)),
        leaf => {
            out.push(conv(leaf).ok_or((*index, leaf))?);
            *index += 1;
            Ok(())
        }
    }
}

/// The shape of a regular tree of `leaf`s and its leaf count, without allocating beyond the
/// shape.
fn measure(value: &Value, field: &str, leaf: Leaf) -> Result<(Vec<usize>, usize), Error> {
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
    check(value, &shape, 0, field, leaf, &mut count)?;
    Ok((shape, count))
}

/// Checks that `value` is regular with `shape` and holds only `leaf`s; counts them.
fn check(
    value: &Value,
    shape: &[usize],
    depth: usize,
    field: &str,
    leaf: Leaf,
    count: &mut usize,
) -> Result<(), Error> {
    match value {
        Value::Array(items) => {
            if depth >= shape.len() || items.len() != shape[depth] {
                return Err(Error::invalid(
                    field,
                    format!("`{field}` is ragged: every array at depth {depth} must have the same length (first had {}, found {})",
                        shape.get(depth).copied().unwrap_or(0), items.len()),
                ));
            }
            items.iter().try_for_each(|v| check(v, shape, depth + 1, field, leaf, count))
        }
        v if leaf.accepts(v) => {
            if depth != shape.len() {
                return Err(Error::invalid(
                    field,
                    format!("`{field}` is ragged: found {} at depth {depth}, expected an array", kind(value)),
                ));
            }
            *count += 1;
            Ok(())
        }
        other => Err(Error::invalid(
            field,
            format!("`{field}` must contain only {}; element {count} is {}", leaf.plural(), kind(other)),
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
    fn typed_values_must_fit_their_datatype() {
        let hold = MemoryBudget::new(1 << 30).hold();
        let (shape, data) = flatten_as(&json!([[1, 2], [3, 4]]), Datatype::Int64, "x", &hold).unwrap();
        assert_eq!((shape, data), (vec![2, 2], TensorData::I64(vec![1, 2, 3, 4])));
        let big = 1i64 << 60;
        assert_eq!(flatten_as(&json!([big]), Datatype::Int64, "x", &hold).unwrap().1, TensorData::I64(vec![big]));
        let e = flatten_as(&json!([1, 300]), Datatype::Uint8, "x", &hold).unwrap_err().to_string();
        assert!(e.contains("value 1 is 300, which is not a UINT8 value"), "{e}");
        let e = flatten_as(&json!([1.5]), Datatype::Int32, "x", &hold).unwrap_err().to_string();
        assert!(e.contains("value 0 is 1.5"), "{e}");
        assert_eq!(
            flatten_as(&json!([true, false]), Datatype::Bool, "x", &hold).unwrap().1,
            TensorData::Bool(vec![true, false])
        );
        let e = flatten_as(&json!([1]), Datatype::Bool, "x", &hold).unwrap_err().to_string();
        assert!(e.contains("only booleans"), "{e}");
        let e = flatten(&json!([true]), "x", &hold).unwrap_err().to_string();
        assert!(e.contains("only numbers; element 0 is a boolean"), "{e}");
        let (shape, t) = flatten_as(&json!([["a", {"b64": "/w=="}]]), Datatype::Bytes, "x", &hold).unwrap();
        assert_eq!((shape, t), (vec![1, 2], TensorData::Bytes(vec![b"a".to_vec(), vec![255]])));
        let e = flatten_as(&json!([{"b64": "!"}]), Datatype::Bytes, "x", &hold).unwrap_err().to_string();
        assert!(e.contains("element 0 is not valid base64"), "{e}");
        let (_, h) = flatten_as(&json!([0.5, -2]), Datatype::Fp16, "x", &hold).unwrap();
        assert_eq!(h.to_f32().unwrap(), [0.5, -2.0]);
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
