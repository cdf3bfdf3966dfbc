//! Decoders for untrusted request bytes: JSON number arrays, PNG/JPEG pictures, KServe binary
//! BYTES elements. Each returns its values (or a clear error); validation against the model's
//! input happens afterwards in `aiserve_core::tensor` or the text limits.

pub mod bytes;
pub mod image;
pub mod json_tensor;
