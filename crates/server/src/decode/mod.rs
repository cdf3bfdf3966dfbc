//! Decoders for untrusted request bytes: JSON number arrays, PNG/JPEG pictures, KServe binary
//! tensors. Each returns a shape and flat `f32` data (or a clear error); validation against the
//! model's input happens afterwards in `aiserve_core::tensor`.

pub mod image;
pub mod json_tensor;
