//! Flush-to-zero for training: subnormal floats (below 1.2e-38) take the x86 cores a slow
//! microcode path, often a hundred times slower than a normal operation. Adam's second moments
//! decay into that range for weights whose gradients fade, and the step slowed to ~1 ms (from
//! ~0.1 ms) within one epoch. TensorFlow flushes them on its CPU threads for the same reason.

/// MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut csr = 0u32;
    // SAFETY: stores the thread's MXCSR into a local.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(csr: u32) {
    // SAFETY: loads a control word that differs from the thread's only in the FTZ/DAZ bits.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly)) };
}

/// Sets (or clears) flush-to-zero on this thread.
fn flush_here(on: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = mxcsr();
        set_mxcsr(if on { csr | FTZ_DAZ } else { csr & !FTZ_DAZ });
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// Whether subnormals count as zero on this thread.
pub(crate) fn flushing() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        mxcsr() & FTZ_DAZ == FTZ_DAZ
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Makes this thread flush subnormals as `on` says (a helper taking a job adopts its caller's
/// mode, so a result never depends on which thread computed it).
pub(crate) fn set_flushing(on: bool) {
    if flushing() != on {
        flush_here(on);
    }
}

/// Trainings under way in this process (tests run several at once): flushing stays on until
/// the last one ends, so each run computes the same bits from start to end.
static ACTIVE: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// While alive, subnormal results and inputs count as zero on the calling thread and rayon's
/// workers: for training only (serving keeps IEEE arithmetic once no training runs). Not `Send`:
/// a guard ends on the thread that made it.
pub struct FlushDenormals(std::marker::PhantomData<*const ()>);

impl FlushDenormals {
    pub fn new() -> Self {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        if *active == 0 {
            rayon::broadcast(|_| flush_here(true));
        }
        *active += 1;
        flush_here(true);
        Self(std::marker::PhantomData)
    }
}

impl Default for FlushDenormals {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        *active -= 1;
        if *active == 0 {
            rayon::broadcast(|_| flush_here(false));
        }
        // The calling thread is the training's own (not a pool worker, or one that keeps
        // flushing with the pool while others train).
        if rayon::current_thread_index().is_none() || *active == 0 {
            flush_here(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnormal() -> f32 {
        std::hint::black_box(1e-30f32) * std::hint::black_box(1e-10f32)
    }

    /// Other tests of this binary train at the same time, so flushing is checked off only while
    /// the count is held at zero.
    #[test]
    fn subnormals_flush_while_alive() {
        {
            let _flush = FlushDenormals::new();
            if cfg!(target_arch = "x86_64") {
                assert_eq!(subnormal(), 0.0);
                let on_workers: Vec<f32> = rayon::broadcast(|_| subnormal());
                assert!(on_workers.iter().all(|&x| x == 0.0), "{on_workers:?}");
            }
        }
        let active = ACTIVE.lock().unwrap();
        if *active == 0 {
            assert!(subnormal() > 0.0, "IEEE arithmetic is back");
            assert!(rayon::broadcast(|_| subnormal()).iter().all(|&x| x > 0.0));
        }
    }
}
