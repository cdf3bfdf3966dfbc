//! Decoders for untrusted request bytes: JSON number arrays (and the cost of the JSON tree
//! itself), PNG/JPEG pictures, KServe binary BYTES elements. Each measures what arrived before
//! it allocates, counts that against the request's memory hold, and returns its values (or a
//! clear error); validation against the model's input happens afterwards in
//! `aiserve_core::tensor` or the text limits.

pub mod bytes;
pub mod image;
pub mod json_cost;
pub mod json_tensor;
