//! deepdist's wire: what the driver, executors and clients say to each other
//! and how — the protocol's messages and frames, the handshake's
//! authentication, TCP with optional TLS, the client connection, the
//! rendezvous file that tells launched executors where the driver listens,
//! and MNIST's download (the one place the data layer needs a network).
//!
//! Training code lives in `deepdist-core`, which this crate builds on and
//! which never depends on it.

pub mod client;
pub mod fetch;
pub mod proto;
pub mod rendezvous;
pub mod transport;
