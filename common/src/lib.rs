//! What the deepdist driver and executors share: datasets and partitions,
//! models with `gradient()`, optimizers with `descent()`, and the in-process
//! training loop they are built from.
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
pub mod client;
pub mod cpu;
pub mod data;
pub mod gemm;
pub mod job;
pub mod mode;
pub mod model;
pub mod optim;
pub mod proto;
pub mod rendezvous;
pub mod train;
pub mod transport;
