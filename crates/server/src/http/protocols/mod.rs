//! One module per wire protocol: its DTOs (private), its handlers, its routes.
//!
//! Handlers convert wire DTOs into validated `ImageBatch`es (`aiserve_core::tensor`), look up the
//! servable in the registry, and hand the batch to the model thread; backends never see JSON.

pub mod anthropic;
pub mod classify;
pub mod classify_graph;
pub mod images;
pub mod kserve;
pub mod kserve_generate;
pub mod kserve_repository;
pub mod ocr;
pub mod openai;
pub mod openai_generate;
pub mod openai_input;
pub mod openai_responses;
pub mod rerank;
pub mod tfserving;
pub mod tfserving_graph;
