//! deepdist's numeric core: datasets and partitions, models with
//! `gradient()`, optimizers with `descent()`, the modes' rules, jobs and
//! checkpoints, and the in-process training loop they are built from.
//!
//! It knows nothing of the network: no async runtime, TLS or HTTP client is
//! among its dependencies (those are `deepdist-wire`'s), so a crate that
//! implements a model depends on this one alone.
//!
//! Everything numeric works on one flat `f32` parameter vector per model, with
//! a named [`model::Layout`] over it, so parameters travel and checkpoint as a
//! single buffer.

// Linking the BLAS backend needs the crate referenced once.
#[cfg(feature = "blas")]
extern crate blas_src;

pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod compress;
pub mod cpu;
pub mod data;
pub mod gemm;
pub mod job;
pub mod mode;
pub mod model;
pub mod noise;
pub mod optim;
pub mod shards;
pub mod tensor;
pub mod train;
