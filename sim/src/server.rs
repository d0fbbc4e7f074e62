//! The simulated driver's side: the real `ServerModel` and the mode's real
//! `ServerRule`, applying one update at a time, holding fetches until the
//! rule lets them be answered, and its network card in each direction.

use deepdist_core::compress::Compression;
use std::collections::HashSet;
use std::sync::Arc;

use deepdist_core::mode::{Authors, STALENESS_BOUNDS, ServerModel, ServerRule, Update, staleness_bucket};

use crate::cost::{LinkModel, Nic};
use crate::events::Event;

/// Bytes of a message without parameters (a fetch, an unchanged answer).
pub(crate) const SMALL: u64 = 64;

/// A fetch the server holds until its rule lets it be answered.
pub(crate) struct Waiting {
    pub from: usize,
    pub wait_for: u64,
    pub newer_than: Option<u64>,
}

/// The parameter server in virtual time.
pub(crate) struct Server {
    pub model: ServerModel,
    rule: Box<dyn ServerRule>,
    /// When the update being applied is done.
    pub free_at: f64,
    /// Virtual seconds spent applying updates.
    pub busy_s: f64,
    waiting: Vec<Waiting>,
    pub card_in: Nic,
    pub card_out: Nic,
    /// The parameters of the current version, copied once for every answer.
    frame: Option<(u64, Arc<Vec<f32>>)>,
    members: HashSet<u64>,
    /// Who produced the latest versions, and whether an executor's own
    /// updates leave its copy equal to the server's (as the driver answers).
    authors: Authors,
    mirrors_local: bool,
    /// How parameters travel to executors (`train.fetch_compression`).
    fetch: Compression,
    /// Examples applied.
    pub examples: u64,
    /// Updates by staleness ([`deepdist_core::mode::STALENESS_BOUNDS`]).
    pub staleness: [u64; STALENESS_BOUNDS.len() + 1],
}

impl Server {
    pub fn new(model: ServerModel, rule: Box<dyn ServerRule>, mirrors_local: bool, fetch: Compression) -> Self {
        Self {
            model,
            rule,
            free_at: 0.0,
            busy_s: 0.0,
            waiting: Vec::new(),
            card_in: Nic::default(),
            card_out: Nic::default(),
            frame: None,
            members: HashSet::new(),
            authors: Authors::default(),
            mirrors_local,
            fetch,
            examples: 0,
            staleness: Default::default(),
        }
    }

    /// Applies an update at `at` (the server is free then), taking `step_s`.
    pub fn apply(&mut self, at: f64, epoch: u32, update: Update<'_>, step_s: f64) {
        self.model.optimizer_mut().begin_epoch(epoch);
        self.examples += u64::from(update.samples);
        let staleness = self.model.version().saturating_sub(update.base_version);
        self.staleness[staleness_bucket(staleness)] += 1;
        let (before, from) = (self.model.version(), update.from);
        self.rule.push(&mut self.model, update);
        self.authors.record(before, self.model.version(), Some(from));
        self.free_at = at + step_s;
        self.busy_s += step_s;
    }

    /// Holds a fetch until [`Server::answer_ready`] finds its rule lets it go.
    pub fn hold(&mut self, fetch: Waiting) {
        self.waiting.push(fetch);
    }

    /// Executor `id` holds a task (`member`) or no longer does; true if that changed.
    pub fn set_member(&mut self, id: u64, member: bool) -> bool {
        let changed = if member {
            self.members.insert(id)
        } else {
            self.members.remove(&id)
        };
        if changed {
            let before = self.model.version();
            self.rule.members(&mut self.model, &self.members);
            self.authors.record(before, self.model.version(), None);
        }
        changed
    }

    /// Answers every held fetch the rule now allows, leaving at `now`: the
    /// deliveries, with when they arrive.
    pub fn answer_ready(&mut self, now: f64, link: &LinkModel) -> Vec<(f64, Event)> {
        let (rule, model) = (&mut self.rule, &self.model);
        let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| rule.ready(model, w.from as u64, w.wait_for));
        self.waiting = still;
        let version = self.model.version();
        let mut deliveries = Vec::with_capacity(ready.len());
        for w in ready {
            let held = self
                .authors
                .unchanged_for(self.mirrors_local, w.from as u64, w.newer_than, version);
            let (values, bytes) = if held {
                (None, SMALL)
            } else {
                let frame = self.frame(version);
                let width = self.fetch.bytes_per_value().unwrap_or(4);
                let bytes = (frame.len() * width) as u64 + SMALL;
                (Some(frame), bytes)
            };
            let left = self.card_out.send(now, bytes, link);
            deliveries.push((
                left + link.latency_s,
                Event::Delivery {
                    to: w.from,
                    version,
                    values,
                },
            ));
        }
        deliveries
    }

    fn frame(&mut self, version: u64) -> Arc<Vec<f32>> {
        match &self.frame {
            Some((v, f)) if *v == version => f.clone(),
            _ => {
                let mut f = self.model.params().to_vec();
                // Executors train on what arrives: rounded, if compressed.
                if self.fetch != Compression::None && self.fetch.decode_into(&self.fetch.encode(&f), &mut f).is_err() {
                    tracing::error!("parameters did not survive their own encoding");
                }
                let f = Arc::new(f);
                self.frame = Some((version, f.clone()));
                f
            }
        }
    }
}
