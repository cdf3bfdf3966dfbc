//! aiserve-runtime: the serving runtime, with no transport (neither axum nor tonic) and no
//! candle. Model code arrives as an `aiserve_core::ModelLoader`; front ends (the server crate's
//! HTTP and gRPC) hand it validated requests and map its [`Error`] to their own codes.
//!
//! Where a request goes, whichever protocol it came in on:
//! 1. The front end decodes its wire types into core's validated requests, counting what it
//!    decodes against the request's [`budget::Hold`] before allocating.
//! 2. [`Registry::resolve`] gives an `Arc<Servable>` for the model and version; holding it keeps
//!    that version alive through a swap.
//! 3. The [`servable::Servable`] kind is asked for its work: images and texts go into the
//!    version's [`worker::Queue`] (a full queue refuses at once; instance threads batch them),
//!    prompts into its [`generation::engine::Engine`] (continuous batching on its own thread),
//!    which streams [`generation::engine::Event`]s back.
//! 4. Results come back by index; the front end encodes them.
//!
//! The [`manager::Manager`] polls the repository (after syncing a [`source::RepoSource`]'s
//! local mirror, for repositories on object storage) and loads, swaps and retires versions beside
//! this; [`metrics`] holds the Prometheus families every layer records into.

pub mod blocking;
pub mod budget;
pub mod error;
pub mod generation;
pub mod graph;
pub mod limits;
pub mod manager;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod scorer;
pub mod servable;
pub mod source;
pub mod stats;
pub mod text_input;
pub mod worker;

pub use error::Error;
pub use limits::{Limits, TextLimits};
pub use registry::Registry;
pub use runtime::Runtime;
