//! aiserve-core: the vocabulary every other crate speaks, with no candle and no axum.
//!
//! It owns model names and versions, the per-model and per-version configuration files, the
//! version policy (which versions should be loaded) and the pure plan that moves the live set
//! towards it, repository scanning, validated inference requests, and the backend traits that
//! model code implements. Everything here is synchronous and unit-tested without a runtime.

pub mod backend;
pub mod batching;
pub mod chat;
pub mod config;
pub mod dtype;
pub mod error;
pub mod generate;
pub mod graph;
pub mod ids;
pub mod math;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod publish;
pub mod repository;
pub mod sampling;
pub mod scheduler;
pub mod state;
pub mod stop;
pub mod tensor;
pub mod text;
pub mod tools;
pub mod values;

pub use backend::{Description, ImageClassifier, Loaded, ModelLoader, TextEmbedder, TextScorer};
pub use dtype::Datatype;
pub use error::{BackendError, InputError, LoadError};
pub use graph::{GraphError, GraphInfo, GraphModel, TensorSpec};
pub use ids::{ModelName, Version};
pub use tensor::ImageBatch;
pub use values::{Tensor, TensorData};
