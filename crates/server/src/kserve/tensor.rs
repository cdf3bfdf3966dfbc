//! KServe tensor datatypes and the little-endian layout both wires share (the HTTP binary
//! extension and gRPC's `raw_input_contents`): numbers widened to f32, BYTES as elements of a
//! 4-byte little-endian length and that many bytes. Everything is counted against the request's
//! hold before it is allocated.

use aiserve_runtime::budget::Hold;
use aiserve_runtime::Error;

use crate::decode::bytes::decode_bytes_elements;

/// A KServe datatype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    Bytes,
}

impl Datatype {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => Self::Bool,
            "UINT8" => Self::Uint8,
            "UINT16" => Self::Uint16,
            "UINT32" => Self::Uint32,
            "UINT64" => Self::Uint64,
            "INT8" => Self::Int8,
            "INT16" => Self::Int16,
            "INT32" => Self::Int32,
            "INT64" => Self::Int64,
            "FP16" => Self::Fp16,
            "FP32" => Self::Fp32,
            "FP64" => Self::Fp64,
            "BF16" => Self::Bf16,
            "BYTES" => Self::Bytes,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bf16 => "BF16",
            Self::Bytes => "BYTES",
        }
    }

    /// Bytes per value (`None` for BYTES, whose elements carry their own lengths).
    pub fn width(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 | Self::Fp16 | Self::Bf16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
            Self::Bytes => return None,
        })
    }
}

/// An input tensor's values, decoded.
pub enum Values {
    /// Numeric values, widened to f32 (what the image models take).
    Numbers(Vec<f32>),
    /// BYTES elements as UTF-8 texts.
    Texts(Vec<String>),
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

/// Decodes little-endian tensor bytes of `datatype` (`field` names the tensor in errors): the
/// decoded values are counted against `hold` first.
pub fn from_le_bytes(datatype: Datatype, b: &[u8], field: &str, hold: &Hold) -> Result<Values, Error> {
    let Some(width) = datatype.width() else {
        // At worst every 4 bytes are an empty element: a 24-byte `String` each.
        hold.grow(b.len() / 4 * size_of::<String>() + b.len(), &format!("the BYTES tensor `{field}`"))?;
        return Ok(Values::Texts(decode_bytes_elements(b)?));
    };
    if !b.len().is_multiple_of(width) {
        return Err(Error::invalid(
            field,
            format!("{} bytes is not a whole number of {} values", b.len(), datatype.name()),
        ));
    }
    hold.grow(b.len() / width * size_of::<f32>(), &format!("the tensor `{field}`"))?;
    macro_rules! conv {
        ($t:ty) => {
            b.chunks_exact(size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")) as f32)
                .collect()
        };
    }
    Ok(Values::Numbers(match datatype {
        Datatype::Fp32 => conv!(f32),
        Datatype::Fp64 => conv!(f64),
        Datatype::Int32 => conv!(i32),
        Datatype::Uint32 => conv!(u32),
        Datatype::Int64 => conv!(i64),
        Datatype::Uint64 => conv!(u64),
        Datatype::Int16 => conv!(i16),
        Datatype::Uint16 => conv!(u16),
        Datatype::Int8 => b.iter().map(|&v| v as i8 as f32).collect(),
        Datatype::Uint8 | Datatype::Bool => b.iter().map(|&v| v as f32).collect(),
        // FP16 / BF16: widen through the bit patterns.
        Datatype::Fp16 => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Datatype::Bf16 => {
            b.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
        }
        Datatype::Bytes => unreachable!("BYTES returned above"),
    }))
}

/// Typed values (gRPC's repeated fields) widened to f32, counted against `hold` first.
pub fn widen<T: Copy>(values: &[T], to_f32: impl Fn(T) -> f32, field: &str, hold: &Hold) -> Result<Values, Error> {
    hold.grow(values.len() * size_of::<f32>(), &format!("the tensor `{field}`"))?;
    Ok(Values::Numbers(values.iter().map(|&v| to_f32(v)).collect()))
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

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
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
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3800), 0.5);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        let budget = aiserve_runtime::budget::MemoryBudget::new(1 << 20);
        let numbers = |d, b: &[u8]| match from_le_bytes(d, b, "x", &budget.hold()).unwrap() {
            Values::Numbers(v) => v,
            Values::Texts(_) => panic!("numbers expected"),
        };
        assert_eq!(numbers(Datatype::Bf16, &[0x80, 0x3f]), vec![1.0]);
        assert_eq!(numbers(Datatype::Uint8, &[0, 255]), vec![0.0, 255.0]);
    }

    #[test]
    fn bytes_round_trip() {
        let b = bytes_elements([b"ab".as_slice(), b"".as_slice(), "é".as_bytes()]);
        let budget = aiserve_runtime::budget::MemoryBudget::new(1 << 20);
        match from_le_bytes(Datatype::Bytes, &b, "inputs[0]", &budget.hold()).unwrap() {
            Values::Texts(t) => assert_eq!(t, ["ab", "", "é"]),
            Values::Numbers(_) => panic!("texts expected"),
        }
    }

    #[test]
    fn ragged_numbers_are_refused() {
        let budget = aiserve_runtime::budget::MemoryBudget::new(1 << 20);
        assert!(from_le_bytes(Datatype::Fp32, &[0; 7], "inputs[0]", &budget.hold()).is_err());
        match from_le_bytes(Datatype::Int64, &7i64.to_le_bytes(), "inputs[0]", &budget.hold()).unwrap() {
            Values::Numbers(v) => assert_eq!(v, [7.0]),
            Values::Texts(_) => panic!("numbers expected"),
        }
    }
}
