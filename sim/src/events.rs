//! The simulation's future: messages in flight, ordered by the virtual time
//! they arrive and, at equal times, by when they were sent.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Something that arrives at a virtual time.
#[derive(Debug)]
pub(crate) enum Event {
    /// An update reaches the server.
    Push {
        from: usize,
        base_version: u64,
        epoch: u32,
        samples: u32,
        values: Vec<f32>,
    },
    /// A task's report reaches the driver (after that executor's pushes).
    TaskDone { from: usize },
    /// A fetch reaches the server.
    Request {
        from: usize,
        wait_for: u64,
        newer_than: Option<u64>,
    },
    /// Parameters reach an executor.
    Delivery {
        to: usize,
        version: u64,
        values: Option<Arc<Vec<f32>>>,
    },
}

struct Timed {
    at: f64,
    seq: u64,
    event: Event,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Timed {}

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timed {
    /// Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// Events in arrival order.
#[derive(Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Timed>,
    seq: u64,
}

impl Queue {
    /// `event` arrives at `at`.
    pub fn at(&mut self, at: f64, event: Event) {
        self.seq += 1;
        self.heap.push(Timed {
            at,
            seq: self.seq,
            event,
        });
    }

    /// When the next event arrives.
    pub fn next_at(&self) -> Option<f64> {
        self.heap.peek().map(|t| t.at)
    }

    /// The next event.
    pub fn pop(&mut self) -> Option<(f64, Event)> {
        self.heap.pop().map(|t| (t.at, t.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_by_order_sent() {
        let mut q = Queue::default();
        let delivery = |to| Event::Delivery {
            to,
            version: 0,
            values: None,
        };
        q.at(2.0, delivery(0));
        q.at(1.0, delivery(1));
        q.at(2.0, delivery(2));
        let order: Vec<usize> = std::iter::from_fn(|| q.pop())
            .map(|(_, e)| match e {
                Event::Delivery { to, .. } => to,
                _ => usize::MAX,
            })
            .collect();
        assert_eq!(order, [1, 0, 2]);
    }
}
