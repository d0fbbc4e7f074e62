//! `[train]`: how training runs — the mode, the epochs and minibatch, and
//! each mode's own keys. Every key is declared once, in [`train_table!`]'s
//! one call below, which writes the table ([`TrainSpec`]), what the modes
//! read of it ([`ModeKeys`]) and the list of mode keys a job gives.

use serde::{Deserialize, Serialize};

/// How executors' updates meet at the parameter server (`train.mode`). The
/// modes themselves are `crate::mode`'s modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Downpour: executors step locally and push their summed steps every
    /// `n_push` minibatches, fetching every `n_fetch`, without waiting.
    #[default]
    Async,
    /// Every step averages the gradients of all executors taking part.
    Sync,
    /// Stale synchronous parallel: asynchronous, but no executor runs more
    /// than `staleness_bound` pushes ahead of the slowest.
    Ssp,
    /// Model averaging (local SGD): `sync_every` local steps, then the
    /// round's models are averaged.
    Average,
    /// Elastic averaging SGD: local models pulled towards a centre every
    /// `tau` steps with rate `alpha`; the centre is the model.
    Easgd,
}

impl Mode {
    /// Every mode, in the order tables list them.
    pub const ALL: [Mode; 5] = [Mode::Async, Mode::Sync, Mode::Ssp, Mode::Average, Mode::Easgd];

    /// The job-file name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Sync => "sync",
            Mode::Ssp => "ssp",
            Mode::Average => "average",
            Mode::Easgd => "easgd",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Writes `[train]` from one list of its keys: the keys every mode reads
/// (with their defaults) and each mode's own keys (optional, unset unless a
/// job gives them).
macro_rules! train_table {
    (
        every mode { $( $(#[$gm:meta])* $g:ident : $gt:ty = $gd:expr, )* }
        one mode { $( $(#[$mm:meta])* $m:ident : $mt:ty, )* }
    ) => {
        /// `[train]`: how training runs. Keys that belong to one mode are
        /// refused with any other (see `crate::mode`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct TrainSpec {
            $( $(#[$gm])* pub $g: $gt, )*
            $( $(#[$mm])* pub $m: Option<$mt>, )*
        }

        impl Default for TrainSpec {
            fn default() -> Self {
                Self { $( $g: $gd, )* $( $m: None, )* }
            }
        }

        /// What the modes read of a job's `[train]` table: each mode's own
        /// keys and the cluster size the job is given for.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct ModeKeys {
            /// The executor count the minibatch and windows are given for.
            pub reference_executors: u32,
            $( $(#[$mm])* pub $m: Option<$mt>, )*
        }

        impl TrainSpec {
            /// What the modes read of this table.
            pub fn mode_keys(&self) -> ModeKeys {
                ModeKeys { reference_executors: self.reference_executors, $( $m: self.$m, )* }
            }

            /// This table with the mode and the mode keys of `keys`.
            pub fn with_mode(&self, mode: Mode, keys: &ModeKeys) -> Self {
                Self { mode, $( $m: keys.$m, )* ..self.clone() }
            }
        }

        impl ModeKeys {
            /// Every mode-specific key and whether the job gives it.
            pub fn given(&self) -> impl Iterator<Item = (&'static str, bool)> {
                [ $( (stringify!($m), self.$m.is_some()), )* ].into_iter()
            }
        }
    };
}

train_table! {
    every mode {
        /// `async` (Downpour), `sync`, `ssp`, `average` or `easgd`.
        mode: Mode = Mode::Async,
        /// Passes over the training set (1–10000).
        epochs: u32 = 10,
        /// Minibatch size per executor step (1–65536), as used by
        /// `reference_executors` executors; modes adapt it to the cluster.
        batch_size: u32 = 128,
        /// The number of executors the minibatch and windows are given for
        /// (default 2): with more, `async` and `ssp` shrink each executor's
        /// share and `sync` shares the step's batch among them, so accuracy
        /// holds as executors are added.
        reference_executors: u32 = 2,
        /// Each executor's cores train one shared copy of the parameters without
        /// locks, each core on its own minibatches (Hogwild!), instead of
        /// splitting every minibatch across the cores.
        hogwild: bool = false,
        /// Seed for initialisation, partitioning and minibatch order.
        seed: u64 = 1,
        /// Accuracy whose first attainment is timed (e.g. 0.98), in (0, 1].
        target_accuracy: Option<f64> = None,
        /// End the job as soon as the target accuracy is reached.
        stop_at_target: bool = false,
        /// How executors' pushes travel: `none` (f32), `fp16` or `bf16`
        /// (16 bits a value, half the bytes), or `topk` (the largest
        /// `topk_fraction` of the values, the rest kept for later pushes).
        compression: crate::compress::Compression = crate::compress::Compression::None,
        /// `topk`: the fraction of values each push sends once warmed up,
        /// in (0, 1] (default 0.01).
        topk_fraction: Option<f64> = None,
        /// `topk`: each update's L2 norm is clipped to this over √executors
        /// before it joins the residual (default: not clipped).
        topk_clip_norm: Option<f32> = None,
        /// How parameters travel to executors: `none`, `fp16` or `bf16`.
        fetch_compression: crate::compress::Compression = crate::compress::Compression::None,
    }
    one mode {
        /// `async`, `ssp`: minibatches whose steps are summed into one push (1–1000, default 1).
        n_push: u32,
        /// `async`: minibatches between parameter fetches (1–1000, default 1).
        n_fetch: u32,
        /// `async`: each executor's first minibatches of a stage over which its
        /// push window grows from 1 to `n_push` (0–1,000,000, default 0: `n_push`
        /// from the start). Staleness costs most while the model moves fastest.
        push_warmup: u32,
        /// `ssp`: how many pushes an executor may be ahead of the slowest (default 3).
        staleness_bound: u32,
        /// `average`: local steps between model averages (default 8).
        sync_every: u32,
        /// `easgd`: local steps between elastic updates (default 4).
        tau: u32,
        /// `easgd`: the elastic pull of each executor, in (0, 1) (default 0.9 / executors).
        alpha: f32,
        /// `async`: the server applies every update this many updates late (an
        /// experiment on delay-tolerant optimizers).
        inject_delay: u32,
    }
}

impl TrainSpec {
    /// How executors encode this job's pushes.
    pub fn push_codec(&self) -> crate::compress::PushCodec {
        let default = crate::compress::PushCodec::default();
        crate::compress::PushCodec {
            compression: self.compression,
            topk_fraction: self.topk_fraction.unwrap_or(default.topk_fraction),
            clip_norm: self.topk_clip_norm,
            momentum_correction: self.mode.momentum_on_executors(self.compression),
        }
    }

    /// Whether values travel as they are both ways.
    pub fn exact_transfer(&self) -> bool {
        self.compression == crate::compress::Compression::None
            && self.fetch_compression == crate::compress::Compression::None
    }
}

impl Default for ModeKeys {
    fn default() -> Self {
        TrainSpec::default().mode_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_key_is_listed_and_carried() {
        let spec: TrainSpec = toml::from_str("n_push = 4\nalpha = 0.5\nreference_executors = 3").unwrap();
        let keys = spec.mode_keys();
        let given: Vec<_> = keys.given().filter(|(_, set)| *set).map(|(k, _)| k).collect();
        assert_eq!(given, ["n_push", "alpha"]);
        assert_eq!(keys.reference_executors, 3);
        assert_eq!(keys.given().count(), 8);
        let other = TrainSpec::default().with_mode(Mode::Easgd, &keys);
        assert_eq!(
            (other.mode, other.n_push, other.alpha),
            (Mode::Easgd, Some(4), Some(0.5))
        );
        assert_eq!(other.reference_executors, 2, "not a mode key: kept");
    }
}
