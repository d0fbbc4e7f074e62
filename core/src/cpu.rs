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

/// Runs `f` compiled for AVX-512 when this CPU has it, and as built (x86-64's
/// baseline SSE2) otherwise. The GEMM kernels already pick AVX-512 at run
/// time; this does the same for the loops around them (sigmoid, dropout,
/// the derivatives), which the compiler vectorises four lanes wide without
/// it and sixteen with it: the DBN's fine-tuning step gained about 4% when
/// everything was built for the host, so these loops were the ones worth
/// it. `f`'s body must be inlined to benefit: pass a closure whose loops
/// call only `#[inline]` code.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU was just found to have every feature `avx512` enables.
        return unsafe { avx512(f) };
    }
    f()
}

/// `f` with AVX-512 enabled for everything inlined into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
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
