//! aiserve-models: model families on candle, their fast CPU kernels, data readers and training.
//!
//! One folder per family (`digits/`, `text/` for Hugging Face encoders, `llm/` for text
//! generation), the kernels they share (`kernels/` for f32, `quant/` for GGUF blocks), dataset
//! readers (`mnist`), and [`loader::CandleLoader`], the `ModelLoader` the server is given.
//!
//! Every unsafe operation, also inside an `unsafe fn` (the SIMD kernels), sits in an `unsafe`
//! block with a `SAFETY` comment saying why it holds.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod checkpoint;
pub mod digit_strings;
pub mod digits;
pub mod image_folder;
pub mod kernels;
pub mod llm;
pub mod loader;
pub mod memory;
pub mod mnist;
pub mod quant;
pub mod text;

pub use loader::CandleLoader;

/// Call first thing in `main`, before any thread starts: gives candle's own elementwise thread
/// pool a single thread (unless `CANDLE_NUM_THREADS` is set). Our kernels and the training loop
/// spread work over rayon's pool already; candle's second pool of spinning threads would compete
/// with it for the same cores (measured: 2,594 → 3,353 training images/s on 2 cores).
pub fn configure_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY (std's precondition for set_var): called before any other thread exists.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Threads the CPU kernels spread over (rayon's pool; `RAYON_NUM_THREADS` sets it).
pub fn compute_threads() -> usize {
    rayon::current_num_threads()
}
