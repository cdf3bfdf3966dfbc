//! KServe tensor datatypes and the little-endian layout both wires share (the HTTP binary
//! extension and gRPC's `raw_input_contents`): numbers in their own type, BYTES as elements of a
//! 4-byte little-endian length and that many bytes. Everything is counted against the request's
//! hold before it is allocated.

use aiserve_core::TensorData;
use aiserve_runtime::budget::Hold;
use aiserve_runtime::Error;

use crate::decode::bytes::decode_bytes_elements;

pub use aiserve_core::Datatype;

/// An input tensor's values, decoded.
pub enum Values {
    /// Numeric (and BOOL) values in their own type; image models widen them to f32.
    Numbers(TensorData),
    /// BYTES elements as UTF-8 texts (JSON strings).
    Texts(Vec<String>),
    /// BYTES elements as sent on a binary wire (the HTTP binary extension, gRPC): any bytes, a
    /// picture say; a model that reads them as text checks them with [`Values::into_texts`].
    Bytes(Vec<Vec<u8>>),
}

impl Values {
    /// Numbers widened to f32 (what image models take); `None` for texts.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self {
            Self::Numbers(d) => d.into_f32(),
            Self::Texts(_) | Self::Bytes(_) => None,
        }
    }

    /// BYTES elements as UTF-8 texts (`field` names the tensor); `None` for numbers.
    pub fn into_texts(self, field: &str) -> Option<Result<Vec<String>, Error>> {
        match self {
            Self::Numbers(_) => None,
            Self::Texts(t) => Some(Ok(t)),
            Self::Bytes(items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(j, b)| {
                        String::from_utf8(b).map_err(|_| {
                            Error::invalid(format!("{field}[{j}]"), format!("`{field}[{j}]` must be UTF-8 text"))
                        })
                    })
                    .collect(),
            ),
        }
    }

    /// BYTES elements as bytes (texts as their UTF-8); `None` for numbers.
    pub fn into_bytes(self) -> Option<Vec<Vec<u8>>> {
        match self {
            Self::Numbers(_) => None,
            Self::Texts(t) => Some(t.into_iter().map(String::into_bytes).collect()),
            Self::Bytes(b) => Some(b),
        }
    }
}

/// The datatype of `inputs[i]`, or a 400 naming it.
pub fn datatype(name: &str, field: &str) -> Result<Datatype, Error> {
    Datatype::parse(name).ok_or_else(|| {
        Error::invalid(
            field,
            format!(
                "`{field}` must be a KServe datatype (FP32, INT64, BYTES, ...), got {:?}",
                crate::error::shown(serde_json::Value::from(name))
            ),
        )
    })
}

/// Bytes of one `serde_json::Value` node, which every JSON output element becomes.
const JSON_VALUE_BYTES: usize = size_of::<serde_json::Value>();

/// The longest text of one JSON number with its separator (`-2.2250738585072014e-308,`).
const JSON_NUMBER_BYTES: usize = 25;

/// Counts a model's output against `hold` before the front end writes it: the values as they
/// are, plus their encoding (the little-endian copy, or the JSON tree and its text; a string may
/// grow six-fold as JSON escapes).
pub fn hold_output(hold: &Hold, values: &TensorData, encoding: super::Encoding, name: &str) -> Result<(), Error> {
    let encoded = match (encoding, values) {
        (super::Encoding::Raw, TensorData::Bytes(v)) => v.iter().map(|b| b.len() + 4).sum(),
        (super::Encoding::Raw, other) => other.heap_bytes(),
        (super::Encoding::Json, TensorData::Bytes(v)) => v.iter().map(|b| 6 * b.len() + 2 * JSON_VALUE_BYTES).sum(),
        (super::Encoding::Json, other) => other.len() * (JSON_VALUE_BYTES + JSON_NUMBER_BYTES),
    };
    hold.grow(values.heap_bytes().saturating_add(encoded), &format!("the output `{name}`"))
}

/// Decodes little-endian tensor bytes of `datatype` (`field` names the tensor in errors): the
/// decoded values are counted against `hold` first.
pub fn from_le_bytes(datatype: Datatype, b: &[u8], field: &str, hold: &Hold) -> Result<Values, Error> {
    if datatype == Datatype::Bytes {
        // At worst every 4 bytes are an empty element: a 24-byte `String` each.
        hold.grow(b.len() / 4 * size_of::<String>() + b.len(), &format!("the BYTES tensor `{field}`"))?;
        return Ok(Values::Bytes(decode_bytes_elements(b)?));
    }
    hold.grow(b.len(), &format!("the tensor `{field}`"))?;
    TensorData::from_le_bytes(datatype, b).map(Values::Numbers).map_err(|e| Error::invalid(field, e))
}

/// Typed integer values (gRPC's repeated fields) as `datatype`'s own type, counted against
/// `hold` first; a value that does not fit the type is named.
pub fn ints<T: Copy + Into<i128>>(values: &[T], datatype: Datatype, field: &str, hold: &Hold) -> Result<Values, Error> {
    let width = datatype
        .width()
        .filter(|_| datatype.is_integer())
        .ok_or_else(|| Error::invalid(field, format!("`{field}` holds integers but the datatype is {datatype}")))?;
    hold.grow(values.len() * width, &format!("the tensor `{field}`"))?;
    macro_rules! conv {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                values
                    .iter()
                    .enumerate()
                    .map(|(j, &x)| {
                        let x: i128 = x.into();
                        <$t>::try_from(x).map_err(|_| {
                            Error::invalid(
                                field,
                                format!("`{field}` value {j} is {x}, which is not a {datatype} value"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(Values::Numbers(match datatype {
        Datatype::Uint8 => conv!(u8, U8),
        Datatype::Uint16 => conv!(u16, U16),
        Datatype::Uint32 => conv!(u32, U32),
        Datatype::Uint64 => conv!(u64, U64),
        Datatype::Int8 => conv!(i8, I8),
        Datatype::Int16 => conv!(i16, I16),
        Datatype::Int32 => conv!(i32, I32),
        Datatype::Int64 => conv!(i64, I64),
        _ => unreachable!("integer datatypes only"),
    }))
}

/// Typed values that need no conversion (f32, f64, bool), counted against `hold` first.
pub fn counted(data: TensorData, field: &str, hold: &Hold) -> Result<Values, Error> {
    hold.grow(data.heap_bytes(), &format!("the tensor `{field}`"))?;
    Ok(Values::Numbers(data))
}

/// BYTES elements that must be UTF-8 texts (`field` names the tensor), counted against `hold`
/// first.
pub fn utf8_texts<B: AsRef<[u8]>>(items: Vec<B>, field: &str, hold: &Hold) -> Result<Values, Error> {
    let bytes: usize = items.iter().map(|b| b.as_ref().len()).sum();
    hold.grow(items.len() * size_of::<String>() + bytes, &format!("the BYTES tensor `{field}`"))?;
    let texts = items
        .iter()
        .enumerate()
        .map(|(j, b)| {
            std::str::from_utf8(b.as_ref())
                .map(str::to_owned)
                .map_err(|_| Error::invalid(format!("{field}[{j}]"), format!("`{field}[{j}]` must be UTF-8 text")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Values::Texts(texts))
}

/// BYTES elements as sent (gRPC's `bytes_contents`), counted against `hold` first.
pub fn raw_bytes<B: AsRef<[u8]>>(items: Vec<B>, field: &str, hold: &Hold) -> Result<Values, Error> {
    let bytes: usize = items.iter().map(|b| b.as_ref().len()).sum();
    hold.grow(items.len() * size_of::<Vec<u8>>() + bytes, &format!("the BYTES tensor `{field}`"))?;
    Ok(Values::Bytes(items.iter().map(|b| b.as_ref().to_vec()).collect()))
}

/// BYTES elements in the length-prefixed layout (outputs of text models over gRPC and the
/// binary extension).
pub fn bytes_elements<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for b in items {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_type() {
        let budget = aiserve_runtime::budget::MemoryBudget::new(1 << 20);
        let numbers = |d, b: &[u8]| match from_le_bytes(d, b, "x", &budget.hold()).unwrap() {
            Values::Numbers(v) => v,
            _ => panic!("numbers expected"),
        };
        assert_eq!(numbers(Datatype::Bf16, &[0x80, 0x3f]).to_f32().unwrap(), vec![1.0]);
        assert_eq!(numbers(Datatype::Uint8, &[0, 255]), TensorData::U8(vec![0, 255]));
        let e = ints(&[1i32, 200], Datatype::Int8, "x", &budget.hold()).err().unwrap().to_string();
        assert!(e.contains("value 1 is 200, which is not a INT8 value"), "{e}");
        match ints(&[u64::MAX], Datatype::Uint64, "x", &budget.hold()).unwrap() {
            Values::Numbers(v) => assert_eq!(v, TensorData::U64(vec![u64::MAX])),
            _ => panic!("numbers expected"),
        }
    }

    #[test]
    fn bytes_round_trip() {
        let b = bytes_elements([b"ab".as_slice(), b"".as_slice(), "é".as_bytes()]);
        let budget = aiserve_runtime::budget::MemoryBudget::new(1 << 20);
        let values = from_le_bytes(Datatype::Bytes, &b, "inputs[0]", &budget.hold()).unwrap();
        assert_eq!(values.into_texts("x").unwrap().unwrap(), ["ab", "", "é"]);
        // Any bytes arrive (a picture); reading them as text names the element.
        let raw = bytes_elements([b"ok".as_slice(), &[0xff, 0xd8]]);
        let values = from_le_bytes(Datatype::Bytes, &raw, "inputs[0]", &budget.hold()).unwrap();
        let e = values.into_texts("inputs[0]").unwrap().unwrap_err().to_string();
        assert!(e.contains("`inputs[0][1]` must be UTF-8 text"), "{e}");
    }

    #[test]
    fn ragged_numbers_are_refused() {
        let budget = aiserve_runtime::budget::MemoryBudget::new(1 << 20);
        assert!(from_le_bytes(Datatype::Fp32, &[0; 7], "inputs[0]", &budget.hold()).is_err());
        match from_le_bytes(Datatype::Int64, &7i64.to_le_bytes(), "inputs[0]", &budget.hold()).unwrap() {
            Values::Numbers(v) => assert_eq!(v, TensorData::I64(vec![7])),
            _ => panic!("numbers expected"),
        }
    }
}
