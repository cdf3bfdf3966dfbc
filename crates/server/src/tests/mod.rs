//! HTTP-level tests of the server with a fake model (no candle): every protocol, every error
//! class, and the version manager's swaps. `fake` holds the test model and repository helpers.

mod admission;
pub mod alloc;
mod batching;
mod fake;
mod fake_generator;
mod fake_graph;
mod graph;
mod grpc_kserve;
mod grpc_listen;
mod grpc_tfserving;
mod http_agents;
mod http_auth;
mod http_classify;
mod http_embeddings;
mod http_generate;
mod http_kserve;
mod http_metrics;
mod http_openapi;
mod http_playground;
mod http_repository;
mod http_structured;
mod http_tfserving;
mod lifecycle;
mod listen;
mod pipeline;
