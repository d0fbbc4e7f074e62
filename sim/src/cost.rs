//! What things cost in virtual time: a minibatch's gradient on C cores, a
//! local or server step over the parameters, and bytes over a link with a
//! shared network card at the driver.

/// The cost of computing, measured on this machine (see `deepdist bench
/// scaling`) or given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Seconds of one example's gradient on one core.
    pub example_s: f64,
    /// What each core beyond the first adds, as a fraction of the first's
    /// rate (1: perfect scaling). Measured from 1 and 2 threads; beyond two
    /// cores it cannot be measured here, so the bench sweeps it.
    pub core_efficiency: f64,
    /// Seconds per parameter value of one step over the parameters (an
    /// executor's local step, the server's `descent()`): memory-bound, so
    /// the same on either side.
    pub step_s_per_value: f64,
    /// The network between executors and the driver.
    pub link: LinkModel,
}

impl CostModel {
    /// How many cores' worth of work `cores` cores do.
    pub fn speedup(&self, cores: usize) -> f64 {
        1.0 + (cores.max(1) - 1) as f64 * self.core_efficiency
    }

    /// Seconds of a minibatch of `examples` on `cores` cores.
    pub fn gradient_s(&self, examples: usize, cores: usize) -> f64 {
        examples as f64 * self.example_s / self.speedup(cores)
    }

    /// Seconds of one step over `values` parameters.
    pub fn step_s(&self, values: usize) -> f64 {
        values as f64 * self.step_s_per_value
    }
}

/// A network link: latency, bandwidth, and how big the messages are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// One-way latency, seconds.
    pub latency_s: f64,
    /// Bytes per second of every network card (the driver's and each executor's).
    pub bytes_per_s: f64,
}

impl LinkModel {
    /// A link of `gbit` Gbit/s with a latency of 50 µs (one switch hop).
    pub fn gbit(gbit: f64) -> Self {
        Self {
            latency_s: 50e-6,
            bytes_per_s: gbit * 1e9 / 8.0,
        }
    }

    /// Reads `10gbit`, `1gbit`, `100mbit` (and a bare number of Gbit/s).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().to_ascii_lowercase();
        let (number, scale) = if let Some(n) = t.strip_suffix("gbit") {
            (n, 1.0)
        } else if let Some(n) = t.strip_suffix("mbit") {
            (n, 1e-3)
        } else {
            (t.as_str(), 1.0)
        };
        let gbit = number
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|g| g.is_finite() && *g > 0.0)?
            * scale;
        Some(Self::gbit(gbit))
    }

    /// Seconds to put `bytes` on the wire.
    pub fn wire_s(&self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes_per_s
    }
}

/// One network card as a queue: messages leave one after another, each
/// when the card is free and the message is ready.
#[derive(Debug, Clone, Copy)]
pub struct Nic {
    free_at: f64,
    /// The part of every message this card carries: 1, or the largest
    /// shard's share when each shard has a card of its own (the busiest
    /// card stands for all of them).
    share: f64,
    /// Seconds it has spent sending.
    pub busy_s: f64,
    /// Bytes of the messages it has sent (whole messages, whatever its share).
    pub bytes: u64,
}

impl Default for Nic {
    fn default() -> Self {
        Self::carrying(1.0)
    }
}

impl Nic {
    /// A card carrying `share` of every message.
    pub fn carrying(share: f64) -> Self {
        Self {
            free_at: 0.0,
            share,
            busy_s: 0.0,
            bytes: 0,
        }
    }

    /// Sends `bytes` that are ready at `ready`; returns when the last byte
    /// has left.
    pub fn send(&mut self, ready: f64, bytes: u64, link: &LinkModel) -> f64 {
        let start = ready.max(self.free_at);
        let wire = link.wire_s((bytes as f64 * self.share).ceil() as u64);
        self.free_at = start + wire;
        self.busy_s += wire;
        self.bytes += bytes;
        self.free_at
    }
}

/// The cores of one machine, shared by every simulated executor and the
/// server when the simulation is of this machine: a piece of work runs on the
/// cores that come free first, once it is ready. (The operating system
/// shares cores by time slices; queueing whole pieces gives the same
/// throughput with coarser interleaving.)
#[derive(Debug, Clone, Default)]
pub struct Cores {
    free_at: Vec<f64>,
}

impl Cores {
    /// A machine of `n` cores (at least one), all free.
    pub fn new(n: usize) -> Self {
        Self {
            free_at: vec![0.0; n.max(1)],
        }
    }

    /// Runs `seconds` of work ready at `ready` on `wanted` cores (at most
    /// all of them); returns when it ends.
    pub fn run(&mut self, ready: f64, seconds: f64, wanted: usize) -> f64 {
        self.free_at.sort_by(f64::total_cmp);
        let taken = wanted.clamp(1, self.free_at.len());
        let start = ready.max(self.free_at[taken - 1]);
        let end = start + seconds;
        self.free_at[..taken].iter_mut().for_each(|f| *f = end);
        end
    }

    /// Work of `seconds` at `at` that does not wait for a core: a thread that
    /// mostly sleeps (the server) is scheduled at once when it wakes, and
    /// its time is taken from the work that comes after it on the core
    /// that frees first.
    pub fn preempt(&mut self, at: f64, seconds: f64) {
        if let Some(first) = self.free_at.iter_mut().min_by(|a, b| a.total_cmp(b)) {
            *first = first.max(at) + seconds;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_and_cards_queue_their_senders() {
        let ten = LinkModel::parse("10gbit").unwrap();
        assert_eq!(ten.bytes_per_s, 1.25e9);
        assert_eq!(LinkModel::parse("100mbit").unwrap().bytes_per_s, 12.5e6);
        assert!(LinkModel::parse("fast").is_none() && LinkModel::parse("0gbit").is_none());
        let mut card = Nic::default();
        // Two 1.25 MB messages ready at once leave 1 ms apart.
        assert!((card.send(0.0, 1_250_000, &ten) - 0.001).abs() < 1e-12);
        assert!((card.send(0.0, 1_250_000, &ten) - 0.002).abs() < 1e-12);
        // One ready after the card is idle again leaves on its own time.
        assert!((card.send(1.0, 1_250_000, &ten) - 1.001).abs() < 1e-12);
        assert_eq!(card.bytes, 3_750_000);
    }

    #[test]
    fn a_machine_runs_as_many_pieces_at_once_as_it_has_cores() {
        let mut machine = Cores::new(2);
        assert_eq!(machine.run(0.0, 1.0, 1), 1.0);
        assert_eq!(machine.run(0.0, 1.0, 1), 1.0, "the second core");
        assert_eq!(machine.run(0.0, 1.0, 1), 2.0, "waits for a core");
        assert_eq!(machine.run(5.0, 1.0, 1), 6.0, "ready after both are free");
        assert_eq!(machine.run(0.0, 1.0, 2), 7.0, "needs both");
        machine.preempt(7.5, 0.25);
        assert_eq!(machine.run(7.0, 1.0, 1), 8.0, "the other core");
        assert_eq!(machine.run(7.0, 1.0, 1), 8.75, "after the preempting work");
    }

    #[test]
    fn cores_add_their_efficiency() {
        let cost = CostModel {
            example_s: 1e-4,
            core_efficiency: 0.5,
            step_s_per_value: 1e-9,
            link: LinkModel::gbit(10.0),
        };
        assert_eq!(cost.speedup(1), 1.0);
        assert_eq!(cost.speedup(9), 5.0);
        assert!((cost.gradient_s(100, 9) - 0.002).abs() < 1e-12);
    }
}
