//! aiserve-models: model families on candle, their fast CPU kernels, data readers and training.
//!
//! One folder per family (`digits/`), the kernels they share (`kernels/`), dataset readers
//! (`mnist`), and [`loader::CandleLoader`], the `ModelLoader` the server is given.

pub mod digits;
pub mod kernels;
pub mod loader;
pub mod mnist;

pub use loader::CandleLoader;
