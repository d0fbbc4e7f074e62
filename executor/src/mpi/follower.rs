//! A group's other ranks: each waits for the leader's next minibatch,
//! computes the gradient of its rows on its own cores, and joins the
//! reduction that sums the group's parts at the leader.

use std::time::{Duration, Instant};

use deepdist_core::cpu::compute_pool;
use mpi::topology::Communicator;
use mpi::traits::*;
use ndarray::ArrayView2;

use super::Comm;
use super::shm::Blocks;
use super::wire::{self, Header};
use crate::group::Setup;

/// How long a waiting follower polls for the next message before it starts
/// to sleep between polls: MPI's blocking receive spins a core for as long
/// as it waits, which between tasks would take a core from everything else.
const SPIN: Duration = Duration::from_millis(2);
/// The longest sleep between polls (a minibatch after a pause is this late at most).
const MAX_NAP: Duration = Duration::from_millis(1);

/// Why a follower stopped before the leader told it to.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The compute threads could not be started.
    #[error("cannot start the compute threads: {0}")]
    Pool(String),
    /// The leader sent what this follower cannot understand (another build?).
    #[error("the group's leader sent an unknown command {0}")]
    Protocol(u64),
    /// A minibatch came before shared blocks of its size (another build?).
    #[error("the group's leader sent a minibatch of {0} parameters without blocks of that size")]
    Blocks(usize),
}

/// A rank of a group other than the leader.
pub struct Follower {
    comm: Comm,
    cores: usize,
}

/// The engine of the setup in force, or why there is none.
enum Engine {
    Ready(Box<dyn deepdist_core::model::Engine>),
    Unusable(String),
}

impl Engine {
    fn build(bytes: &[u8], rank: u64) -> Engine {
        let built = postcard::from_bytes::<Setup>(bytes)
            .map_err(|e| format!("cannot decode the leader's setup: {e}"))
            .and_then(|s| {
                let model = s
                    .spec
                    .network(s.stage as usize, s.dim, s.classes)
                    .map_err(|e| e.to_string())?;
                // Each rank samples dropout and RBM states from its own stream.
                let seed = s.seed ^ rank.wrapping_mul(0xD1B5_4A32_D192_ED03);
                Ok(model.engine(s.batch, rayon::current_num_threads(), seed))
            });
        match built {
            Ok(engine) => Engine::Ready(engine),
            Err(e) => {
                tracing::error!(error = %e, "this rank cannot compute for its group");
                Engine::Unusable(e)
            }
        }
    }

    fn gradient(&mut self, params: &[f32], x: ArrayView2<'_, f32>, y: &[u8]) -> Result<(f32, &[f32]), String> {
        match self {
            Engine::Ready(e) => e.gradient(params, x, y).map_err(|e| e.to_string()),
            Engine::Unusable(why) => Err(why.clone()),
        }
    }
}

impl Follower {
    pub(super) fn new(comm: Comm, cores: usize) -> Self {
        Self { comm, cores }
    }

    /// This rank in its group.
    pub fn rank(&self) -> i32 {
        self.comm.0.rank()
    }

    /// Serves the leader until it says stop.
    pub fn serve(self) -> Result<(), FollowerError> {
        let pool = compute_pool(Some(self.cores)).map_err(|e| FollowerError::Pool(e.to_string()))?;
        // On a pool thread: MPI is initialised for calls from any thread, one at a time.
        pool.install(move || self.serve_on_pool())
    }

    fn serve_on_pool(&self) -> Result<(), FollowerError> {
        let comm = &self.comm.0;
        let rank = comm.rank() as usize;
        let leader = comm.process_at_rank(0);
        let mut engine = Engine::Unusable("no setup from the leader yet".into());
        let (mut params, mut x, mut y) = (Vec::new(), Vec::new(), Vec::new());
        let mut blocks: Option<Blocks> = None;
        loop {
            self.await_leader();
            let mut raw = [0u64; wire::HEADER];
            leader.receive_into(&mut raw[..]);
            let arrived = Instant::now();
            let header = Header::decode(raw);
            match header.command {
                wire::STOP => {
                    if let Some(blocks) = blocks.take() {
                        blocks.free();
                    }
                    return Ok(());
                }
                wire::BLOCKS => {
                    if let Some(old) = blocks.take() {
                        old.free();
                    }
                    blocks = Some(Blocks::allocate(comm, header.len as usize));
                }
                wire::SETUP => {
                    let mut bytes = vec![0u8; header.len as usize];
                    leader.receive_into(&mut bytes[..]);
                    engine = Engine::build(&bytes, rank as u64);
                }
                wire::GRADIENT => {
                    let (len, dim) = (header.len as usize, header.dim as usize);
                    let mine = header.start as usize..header.end as usize;
                    params.resize(len, 0.0);
                    x.resize(mine.len() * dim, 0.0);
                    leader.receive_into(&mut params[..]);
                    leader.receive_into(&mut x[..]);
                    y.resize(if header.supervised { mine.len() } else { 0 }, 0u8);
                    if header.supervised {
                        leader.receive_into(&mut y[..]);
                    }
                    let block = match &mut blocks {
                        Some(b) if b.len() == len => b,
                        _ => return Err(FollowerError::Blocks(len)),
                    };
                    let weight = mine.len() as f32 / header.rows.max(1) as f32;
                    let computed = match ArrayView2::from_shape((mine.len(), dim), &x[..]) {
                        _ if mine.is_empty() => Ok((0.0, &[][..])),
                        Ok(view) => engine.gradient(&params, view, &y),
                        Err(e) => Err(e.to_string()),
                    };
                    let trailer = match computed {
                        Ok((_, [])) => {
                            block.own().fill(0.0);
                            wire::trailer(0.0, false, arrived.elapsed().as_secs_f32())
                        }
                        Ok((loss, g)) if g.len() == len => {
                            crate::group::weighted_into(block.own(), g, weight);
                            wire::trailer(loss * weight, false, arrived.elapsed().as_secs_f32())
                        }
                        failed => {
                            let why = failed
                                .map_or_else(|e| e, |(_, g)| format!("{} gradients for {len} parameters", g.len()));
                            tracing::error!(error = %why, "cannot compute this rank's part of the gradient");
                            block.own().fill(0.0);
                            wire::trailer(0.0, true, arrived.elapsed().as_secs_f32())
                        }
                    };
                    block.sync();
                    leader.send(&trailer[..]);
                }
                other => return Err(FollowerError::Protocol(other)),
            }
        }
    }

    /// Returns once a message from the leader is waiting: spins briefly
    /// (the next minibatch usually follows within a millisecond), then
    /// naps between polls so an idle group leaves its cores alone.
    fn await_leader(&self) {
        let leader = self.comm.0.process_at_rank(0);
        let started = Instant::now();
        let mut nap = Duration::from_micros(50);
        while leader.immediate_probe().is_none() {
            if started.elapsed() > SPIN {
                std::thread::sleep(nap);
                nap = (nap * 2).min(MAX_NAP);
            }
        }
    }
}
