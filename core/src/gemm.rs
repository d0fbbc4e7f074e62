//! This machine's f32 GEMM peak, measured with the GEMM backend the build
//! uses: the yardstick for the gradient benchmark's "fraction of peak".

use std::time::Instant;

use ndarray::Array2;
use ndarray::linalg::general_mat_mul;
use rayon::prelude::*;

/// Square size of the peak measurement: large enough for the kernel's
/// steady state, small enough to stay in cache-friendly blocking.
pub const PEAK_SIZE: usize = 1024;

/// Which GEMM implementation this build links.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "blas") {
        "OpenBLAS (cblas, system)"
    } else {
        "matrixmultiply (pure Rust, AVX-512/FMA kernels)"
    }
}

/// Aggregate GFLOP/s of `threads` independent `n × n × n` sgemms running at
/// once on the current rayon pool (one per thread), over one timed window of
/// about `seconds`.
pub fn gemm_gflops(n: usize, threads: usize, seconds: f64) -> f64 {
    let threads = threads.max(1);
    let mats: Vec<_> = (0..threads)
        .map(|t| {
            let a = Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3 + t) % 13) as f32 * 0.01);
            let b = Array2::from_shape_fn((n, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 * 0.01);
            (a, b, Array2::<f32>::zeros((n, n)))
        })
        .collect();
    let flops = 2.0 * (n as f64).powi(3);
    // Warm up, then find how many repetitions fill the window.
    let one = {
        let t = Instant::now();
        let (a, b, mut c) = mats[0].clone();
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        t.elapsed().as_secs_f64()
    };
    let reps = ((seconds / one.max(1e-6)) as usize).max(1);
    let mut mats = mats;
    let start = Instant::now();
    mats.par_iter_mut().for_each(|(a, b, c)| {
        for _ in 0..reps {
            general_mat_mul(1.0, a, b, 0.0, c);
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    flops * (reps * threads) as f64 / elapsed / 1e9
}

/// This machine's f32 GEMM peak on `threads` threads right now, in GFLOP/s
/// (median of three 1-s windows): what benchmark figures are quoted beside.
pub fn gemm_peak(threads: usize) -> f64 {
    let mut peaks: Vec<f64> = (0..3).map(|_| gemm_gflops(PEAK_SIZE, threads, 1.0)).collect();
    crate::bench::median(&mut peaks)
}
