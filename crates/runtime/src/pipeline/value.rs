//! What flows between a pipeline's steps: one tensor, or a list of tensors each its own size
//! (a picture's text lines), and the conversions between tensors and pictures the built-in
//! steps share.

use aiserve_core::{Datatype, Tensor, TensorData};
use aiserve_vision::picture::Picture;

use crate::error::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    One(Tensor),
    Many(Vec<Tensor>),
}

impl Value {
    /// Bytes the values take.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::One(t) => t.data.heap_bytes(),
            Value::Many(list) => list.iter().map(|t| t.data.heap_bytes()).sum(),
        }
    }

    pub fn one(self, port: &str) -> Result<Tensor, Error> {
        match self {
            Value::One(t) => Ok(t),
            Value::Many(_) => {
                Err(Error::internal(&format!("port `{port}` was given a list; wiring checks one tensor")))
            }
        }
    }

    pub fn many(self, port: &str) -> Result<Vec<Tensor>, Error> {
        match self {
            Value::Many(list) => Ok(list),
            Value::One(_) => Err(Error::internal(&format!("port `{port}` was given one tensor; wiring checks a list"))),
        }
    }
}

/// A `[height, width, channels]` UINT8 tensor as a picture.
pub fn picture(t: Tensor, port: &str) -> Result<Picture, Error> {
    match (t.shape.as_slice(), t.data) {
        (&[height, width, channels], TensorData::U8(pixels)) if channels > 0 => {
            Ok(Picture { pixels, height, width, channels })
        }
        (shape, data) => Err(Error::invalid(
            port,
            format!("`{port}` must be a UINT8 picture [height, width, channels], got {} {shape:?}", data.datatype()),
        )),
    }
}

/// A picture as a `[height, width, channels]` UINT8 tensor.
pub fn from_picture(p: Picture) -> Tensor {
    Tensor { shape: vec![p.height, p.width, p.channels], data: TensorData::U8(p.pixels) }
}

/// An FP32 tensor's values, or an error naming the port.
pub fn floats<'a>(t: &'a Tensor, port: &str) -> Result<&'a [f32], Error> {
    match &t.data {
        TensorData::F32(v) => Ok(v),
        other => Err(Error::invalid(port, format!("`{port}` must be {}, got {}", Datatype::Fp32, other.datatype()))),
    }
}

/// An INT64 tensor's values, or an error naming the port.
pub fn ints<'a>(t: &'a Tensor, port: &str) -> Result<&'a [i64], Error> {
    match &t.data {
        TensorData::I64(v) => Ok(v),
        other => Err(Error::invalid(port, format!("`{port}` must be {}, got {}", Datatype::Int64, other.datatype()))),
    }
}

/// An FP32 tensor of `shape` (the caller computed the values for it).
pub fn f32_tensor(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    Tensor { shape, data: TensorData::F32(values) }
}
