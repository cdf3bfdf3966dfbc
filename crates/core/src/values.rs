//! Typed tensors: a shape and values in the element type the model declared, as generic graph
//! models (ONNX) take and give them. Protocols decode their wire formats into a [`Tensor`] after
//! counting what arrived against the request's limits; batching joins and splits tensors along
//! dimension 0 with [`TensorData::concat`] and [`TensorData::slice`].

use half::{bf16, f16};
use serde_json::Value;

use crate::dtype::Datatype;

/// A tensor's values, row-major, in their own element type.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// BYTES elements (ONNX strings must be UTF-8; checked where they are handed to the runtime).
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any variant (`$v` is bound to it).
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::Bf16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Like [`each!`], wrapping the result back into the same variant.
macro_rules! same {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::Bf16($v) => TensorData::Bf16($body),
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Bool(_) => Datatype::Bool,
            Self::U8(_) => Datatype::Uint8,
            Self::U16(_) => Datatype::Uint16,
            Self::U32(_) => Datatype::Uint32,
            Self::U64(_) => Datatype::Uint64,
            Self::I8(_) => Datatype::Int8,
            Self::I16(_) => Datatype::Int16,
            Self::I32(_) => Datatype::Int32,
            Self::I64(_) => Datatype::Int64,
            Self::F16(_) => Datatype::Fp16,
            Self::Bf16(_) => Datatype::Bf16,
            Self::F32(_) => Datatype::Fp32,
            Self::F64(_) => Datatype::Fp64,
            Self::Bytes(_) => Datatype::Bytes,
        }
    }

    /// `n` zeros (false, empty BYTES elements) of `datatype`.
    pub fn zeros(datatype: Datatype, n: usize) -> Self {
        match datatype {
            Datatype::Bool => Self::Bool(vec![false; n]),
            Datatype::Uint8 => Self::U8(vec![0; n]),
            Datatype::Uint16 => Self::U16(vec![0; n]),
            Datatype::Uint32 => Self::U32(vec![0; n]),
            Datatype::Uint64 => Self::U64(vec![0; n]),
            Datatype::Int8 => Self::I8(vec![0; n]),
            Datatype::Int16 => Self::I16(vec![0; n]),
            Datatype::Int32 => Self::I32(vec![0; n]),
            Datatype::Int64 => Self::I64(vec![0; n]),
            Datatype::Fp16 => Self::F16(vec![f16::ZERO; n]),
            Datatype::Bf16 => Self::Bf16(vec![bf16::ZERO; n]),
            Datatype::Fp32 => Self::F32(vec![0.0; n]),
            Datatype::Fp64 => Self::F64(vec![0.0; n]),
            Datatype::Bytes => Self::Bytes(vec![Vec::new(); n]),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes the values take (what a request's memory hold counts).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Self::Bytes(v) => v.iter().map(|b| b.len() + size_of::<Vec<u8>>()).sum(),
            other => other.len() * other.datatype().width().unwrap_or(1),
        }
    }

    /// Decodes little-endian values of a fixed-width `datatype` (BYTES has its own framing and
    /// is decoded by the protocols). The caller has counted `b.len()` against its limits.
    pub fn from_le_bytes(datatype: Datatype, b: &[u8]) -> Result<Self, String> {
        let Some(width) = datatype.width() else {
            return Err("BYTES tensors are not fixed-width".into());
        };
        if !b.len().is_multiple_of(width) {
            return Err(format!("{} bytes is not a whole number of {datatype} values", b.len()));
        }
        macro_rules! le {
            ($t:ty) => {
                b.chunks_exact(size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
                    .collect()
            };
        }
        Ok(match datatype {
            Datatype::Bool => Self::Bool(b.iter().map(|&v| v != 0).collect()),
            Datatype::Uint8 => Self::U8(b.to_vec()),
            Datatype::Uint16 => Self::U16(le!(u16)),
            Datatype::Uint32 => Self::U32(le!(u32)),
            Datatype::Uint64 => Self::U64(le!(u64)),
            Datatype::Int8 => Self::I8(b.iter().map(|&v| v as i8).collect()),
            Datatype::Int16 => Self::I16(le!(i16)),
            Datatype::Int32 => Self::I32(le!(i32)),
            Datatype::Int64 => Self::I64(le!(i64)),
            Datatype::Fp16 => Self::F16(b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            Datatype::Bf16 => Self::Bf16(b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
            Datatype::Fp32 => Self::F32(le!(f32)),
            Datatype::Fp64 => Self::F64(le!(f64)),
            Datatype::Bytes => unreachable!("refused above"),
        })
    }

    /// Appends the values as little-endian bytes (KServe's binary extension, gRPC raw
    /// contents); BYTES elements as a 4-byte length and the bytes.
    pub fn append_le_bytes(&self, out: &mut Vec<u8>) {
        macro_rules! le {
            ($v:expr) => {
                $v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
            };
        }
        match self {
            Self::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
            Self::U8(v) => out.extend_from_slice(v),
            Self::U16(v) => le!(v),
            Self::U32(v) => le!(v),
            Self::U64(v) => le!(v),
            Self::I8(v) => out.extend(v.iter().map(|&b| b as u8)),
            Self::I16(v) => le!(v),
            Self::I32(v) => le!(v),
            Self::I64(v) => le!(v),
            Self::F16(v) => le!(v),
            Self::Bf16(v) => le!(v),
            Self::F32(v) => le!(v),
            Self::F64(v) => le!(v),
            Self::Bytes(v) => v.iter().for_each(|b| {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }),
        }
    }

    /// The values widened to f32 (what the image models take); `None` for BYTES.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(match self {
            Self::F32(v) => v.clone(),
            other => other.to_f32_lossy()?,
        })
    }

    /// Consumes the values into f32s (moves an F32 buffer); `None` for BYTES.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self {
            Self::F32(v) => Some(v),
            other => other.to_f32_lossy(),
        }
    }

    fn to_f32_lossy(&self) -> Option<Vec<f32>> {
        Some(match self {
            Self::Bool(v) => v.iter().map(|&b| b as u8 as f32).collect(),
            Self::U8(v) => v.iter().map(|&x| x as f32).collect(),
            Self::U16(v) => v.iter().map(|&x| x as f32).collect(),
            Self::U32(v) => v.iter().map(|&x| x as f32).collect(),
            Self::U64(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I8(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I16(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::F32(v) => v.clone(),
            Self::F64(v) => v.iter().map(|&x| x as f32).collect(),
            Self::Bytes(_) => return None,
        })
    }

    /// The values as a flat JSON array (KServe v2 JSON `data`): FP16/BF16 as numbers, BOOL as
    /// booleans, BYTES as strings (invalid UTF-8 replaced).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Bool(v) => Value::from(v.clone()),
            Self::U8(v) => Value::from(v.clone()),
            Self::U16(v) => Value::from(v.clone()),
            Self::U32(v) => Value::from(v.clone()),
            Self::U64(v) => Value::from(v.clone()),
            Self::I8(v) => Value::from(v.clone()),
            Self::I16(v) => Value::from(v.clone()),
            Self::I32(v) => Value::from(v.clone()),
            Self::I64(v) => Value::from(v.clone()),
            Self::F16(v) => Value::Array(v.iter().map(|x| json_f64(x.to_f64())).collect()),
            Self::Bf16(v) => Value::Array(v.iter().map(|x| json_f64(x.to_f64())).collect()),
            Self::F32(v) => Value::Array(v.iter().map(|&x| json_f64(x as f64)).collect()),
            Self::F64(v) => Value::Array(v.iter().map(|&x| json_f64(x)).collect()),
            Self::Bytes(v) => Value::Array(v.iter().map(|b| Value::from(String::from_utf8_lossy(b))).collect()),
        }
    }

    /// Elements `start..end` (a run of rows along dimension 0), as a new tensor.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        same!(self, v => v[start..end].to_vec())
    }

    /// The parts joined end to end; `None` when they are not all of one datatype.
    pub fn concat(parts: &[&TensorData]) -> Option<Self> {
        let first = *parts.first()?;
        let mut out = same!(first, v => Vec::with_capacity(v.len() * parts.len()));
        for p in parts {
            match (&mut out, *p) {
                (TensorData::Bool(o), TensorData::Bool(v)) => o.extend_from_slice(v),
                (TensorData::U8(o), TensorData::U8(v)) => o.extend_from_slice(v),
                (TensorData::U16(o), TensorData::U16(v)) => o.extend_from_slice(v),
                (TensorData::U32(o), TensorData::U32(v)) => o.extend_from_slice(v),
                (TensorData::U64(o), TensorData::U64(v)) => o.extend_from_slice(v),
                (TensorData::I8(o), TensorData::I8(v)) => o.extend_from_slice(v),
                (TensorData::I16(o), TensorData::I16(v)) => o.extend_from_slice(v),
                (TensorData::I32(o), TensorData::I32(v)) => o.extend_from_slice(v),
                (TensorData::I64(o), TensorData::I64(v)) => o.extend_from_slice(v),
                (TensorData::F16(o), TensorData::F16(v)) => o.extend_from_slice(v),
                (TensorData::Bf16(o), TensorData::Bf16(v)) => o.extend_from_slice(v),
                (TensorData::F32(o), TensorData::F32(v)) => o.extend_from_slice(v),
                (TensorData::F64(o), TensorData::F64(v)) => o.extend_from_slice(v),
                (TensorData::Bytes(o), TensorData::Bytes(v)) => o.extend_from_slice(v),
                _ => return None,
            }
        }
        Some(out)
    }
}

/// A finite number as JSON; NaN and infinities (which JSON cannot hold) as null.
fn json_f64(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A typed tensor: its shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose element count matches its shape, or a message saying how they differ.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, String> {
        let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(format!("shape {shape:?} needs {} values, got {}", fmt_count(expected), data.len()));
        }
        Ok(Self { shape, data })
    }

    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }

    /// Rows along dimension 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Rows `start..end` along dimension 0.
    pub fn rows_slice(&self, start: usize, end: usize) -> Tensor {
        let per_row = self.per_row();
        let mut shape = self.shape.clone();
        if let Some(d) = shape.first_mut() {
            *d = end - start;
        }
        Tensor { shape, data: self.data.slice(start * per_row, end * per_row) }
    }

    /// Tensors of one datatype and equal trailing dimensions, stacked along dimension 0.
    pub fn concat_rows(parts: &[&Tensor]) -> Option<Tensor> {
        let first = *parts.first()?;
        if first.shape.is_empty() || parts.iter().any(|p| p.shape.get(1..) != first.shape.get(1..)) {
            return None;
        }
        let data = TensorData::concat(&parts.iter().map(|p| &p.data).collect::<Vec<_>>())?;
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        Some(Tensor { shape, data })
    }

    fn per_row(&self) -> usize {
        self.shape.get(1..).map_or(1, |rest| rest.iter().product())
    }
}

fn fmt_count(n: Option<usize>) -> String {
    n.map_or_else(|| "more than 2^64".into(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_bytes_round_trip_every_fixed_width_type() {
        for d in Datatype::ALL.into_iter().filter(|d| d.width().is_some()) {
            let w = d.width().unwrap();
            let bytes: Vec<u8> = (0..3 * w as u8).map(|b| if d == Datatype::Bool { b % 2 } else { b }).collect();
            let t = TensorData::from_le_bytes(d, &bytes).unwrap();
            assert_eq!((t.datatype(), t.len()), (d, 3), "{d}");
            let mut back = Vec::new();
            t.append_le_bytes(&mut back);
            assert_eq!(back, bytes, "{d}");
        }
        assert!(TensorData::from_le_bytes(Datatype::Fp32, &[0; 7]).unwrap_err().contains("7 bytes"));
        assert!(TensorData::from_le_bytes(Datatype::Bytes, &[0; 4]).is_err());
    }

    #[test]
    fn widening_and_json() {
        let t = TensorData::from_le_bytes(Datatype::Fp16, &[0x00, 0x3c, 0x00, 0xc0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), [1.0, -2.0]);
        assert_eq!(t.to_json(), serde_json::json!([1.0, -2.0]));
        assert_eq!(TensorData::I64(vec![1 << 40]).to_json(), serde_json::json!([1i64 << 40]));
        assert_eq!(TensorData::F32(vec![f32::NAN]).to_json(), serde_json::json!([null]));
        assert_eq!(TensorData::Bytes(vec![b"hi".to_vec()]).to_json(), serde_json::json!(["hi"]));
        assert!(TensorData::Bytes(vec![]).to_f32().is_none());
    }

    #[test]
    fn rows_join_and_split_back() {
        let a = Tensor::new(vec![1, 2], TensorData::I64(vec![1, 2])).unwrap();
        let b = Tensor::new(vec![2, 2], TensorData::I64(vec![3, 4, 5, 6])).unwrap();
        let all = Tensor::concat_rows(&[&a, &b]).unwrap();
        assert_eq!(all.shape, [3, 2]);
        assert_eq!(all.rows_slice(0, 1), a);
        assert_eq!(all.rows_slice(1, 3), b);
        let c = Tensor::new(vec![1, 3], TensorData::I64(vec![0; 3])).unwrap();
        assert!(Tensor::concat_rows(&[&a, &c]).is_none(), "trailing dims differ");
        let d = Tensor::new(vec![1, 2], TensorData::F32(vec![0.0; 2])).unwrap();
        assert!(Tensor::concat_rows(&[&a, &d]).is_none(), "datatypes differ");
        assert!(Tensor::new(vec![2, 2], TensorData::F32(vec![0.0; 3])).unwrap_err().contains("needs 4 values, got 3"));
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::F32(vec![])).unwrap_err().contains("more than"));
    }
}
