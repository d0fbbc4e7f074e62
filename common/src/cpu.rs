//! Compute threads: the rayon pool every numeric path runs on.

use rayon::{ThreadPool, ThreadPoolBuildError, ThreadPoolBuilder};

/// Makes the calling thread treat denormal floats as zero (x86-64 FTZ and
/// DAZ). Late in training many weights, momenta and activations drift into
/// the denormal range, where every operation is many times slower: measured
/// here, an MLP epoch lost 20% of its throughput by epoch 5 without this,
/// and none with it, for the same accuracy.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    #[allow(deprecated)] // the intrinsics are deprecated in favour of inline asm; same instruction
    // SAFETY: setting the FTZ (bit 15) and DAZ (bit 6) bits only changes how
    // this thread rounds subnormal results; it cannot violate memory safety.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// A rayon pool of `threads` (default: every core) whose threads flush
/// denormals to zero.
pub fn compute_pool(threads: Option<usize>) -> Result<ThreadPool, ThreadPoolBuildError> {
    single_threaded_blas();
    let mut builder = ThreadPoolBuilder::new()
        .thread_name(|i| format!("deepdist-compute-{i}"))
        .start_handler(|_| flush_denormals());
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    builder.build()
}

/// With the `blas` feature, stops OpenBLAS from starting threads of its own:
/// parallelism comes from rayon splitting the batch, and both at once
/// oversubscribe the cores (measured: 19% of GEMM peak instead of 69%).
fn single_threaded_blas() {
    #[cfg(feature = "blas")]
    {
        unsafe extern "C" {
            fn openblas_set_num_threads(n: std::ffi::c_int);
        }
        // SAFETY: a plain setter in the linked OpenBLAS, callable at any time.
        unsafe { openblas_set_num_threads(1) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_threads_flush_denormals() {
        let pool = super::compute_pool(Some(1)).unwrap();
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let result = pool.install(|| std::hint::black_box(tiny) / std::hint::black_box(4.0f32));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(result, 0.0);
        }
    }
}
