//! Fast CPU kernels for small convolutional networks, plugged into candle as custom ops.
//!
//! candle's CPU conv2d and its backward pass are slow for 28x28 images (a few GFLOP/s), so the
//! digits CNN runs its convolutions in NHWC layout as implicit GEMMs on a packed kernel with the
//! bias and ReLU (and for the pooled layers the 2x2 max pool) fused in, and a backward pass of
//! im2col + GEMMs. Each op implements candle's `CustomOp` traits, so autograd and the optimiser
//! work unchanged. Work inside an op is spread over the [`team`] of helper threads (per image for copies, per
//! GEMM tile for the products); an op keeps nothing between calls except what one call's forward
//! pass leaves for its own backward (the pooled windows' arg-max).
//!
//! Text encoders use [`packed`]: their linear layers' weights packed once at load for a
//! register-tiled product (the gemm crate packs both operands on every call).

pub mod conv;
pub mod denormals;
pub mod gemm;
pub mod packed;
#[cfg(test)]
mod pool;
pub mod skinny;
pub(crate) mod team;

use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};
use std::sync::Mutex;

/// True on a rayon worker thread: the caller already spreads work over the cores (training
/// shards each batch across them), so kernels run sequentially instead of nesting parallelism.
pub(crate) fn nested() -> bool {
    rayon::current_thread_index().is_some()
}

/// An output buffer's address shared by a job's tasks, each of which writes only its own
/// disjoint part of it (the callers' `SAFETY` comments say which) while the buffer lives.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the tasks sharing it write disjoint elements only, and the buffer outlives the job.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Whether f32 kernels run on 512-bit vectors (checked once; `AISERVE_NO_AVX512=1` says no).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *YES.get_or_init(|| {
            std::env::var_os("AISERVE_NO_AVX512").is_none() && std::arch::is_x86_feature_detected!("avx512f")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether `tasks` pieces of work are worth handing to the [`team`]: more than one, more than
/// one thread to run them, and not on a rayon worker ([`nested`]: training's shards, which
/// keep their kernels sequential). Otherwise the calling thread does them itself.
pub(crate) fn spread(tasks: usize) -> bool {
    tasks > 1 && !nested() && rayon::current_num_threads() > 1
}

/// Calls `f(i, chunk)` for each `chunk_len`-sized chunk of `dst`, over the [`team`] where
/// [`spread`] says so.
pub(crate) fn for_each_chunk_mut<T: Send>(dst: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let chunk_len = chunk_len.max(1);
    if !spread(dst.len().div_ceil(chunk_len)) {
        dst.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        // Each chunk is taken by exactly one task; the locks are never contended.
        let chunks: Vec<Mutex<&mut [T]>> = dst.chunks_mut(chunk_len).map(Mutex::new).collect();
        team::run(chunks.len(), &|i| f(i, &mut chunks[i].lock().unwrap_or_else(|e| e.into_inner())));
    }
}

/// [`for_each_chunk_mut`] over two buffers cut alike: `f(i, a_chunk, b_chunk)` for the `i`-th
/// `a_len`-sized chunk of `a` and `b_len`-sized chunk of `b` (a picture's values and its arg-max
/// bytes).
pub(crate) fn for_each_chunk_pair_mut<A: Send, B: Send>(
    (a, a_len): (&mut [A], usize),
    (b, b_len): (&mut [B], usize),
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    let tasks = a.len().div_ceil(a_len.max(1));
    let pairs = a.chunks_mut(a_len.max(1)).zip(b.chunks_mut(b_len.max(1)));
    if !spread(tasks) {
        pairs.enumerate().for_each(|(i, (x, y))| f(i, x, y));
    } else {
        // Each pair is taken by exactly one task; the locks are never contended.
        let pairs: Vec<Mutex<(&mut [A], &mut [B])>> = pairs.map(Mutex::new).collect();
        team::run(pairs.len(), &|i| {
            let mut pair = pairs[i].lock().unwrap_or_else(|e| e.into_inner());
            let (x, y) = &mut *pair;
            f(i, x, y)
        });
    }
}

/// The contiguous `f32` data of a CPU storage as described by its layout.
pub(crate) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// Runs `f` on a CPU tensor's contiguous `f32` data (copying only if it is strided).
pub(crate) fn with_cpu_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(f32_slice(cpu, layout, what)?),
        _ => bail!("{what}: the fast kernels run on the CPU only"),
    }
}
