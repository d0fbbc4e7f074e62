//! The deepdist driver: executor registry, scheduler, parameter server, job
//! queue, evaluation, checkpoints and status API.
//!
//! The distributed runtime is built in its own issue (#3) on top of the compute
//! core in `deepdist-common`; this crate is its home in the workspace.

pub use deepdist_common as common;
