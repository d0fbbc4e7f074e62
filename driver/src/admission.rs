//! Who may start a handshake: at most [`MAX_HANDSHAKES`] connections may be
//! in their handshake at once, and at most [`MAX_HANDSHAKES_PER_ADDRESS`]
//! from one address, so peers that connect and say nothing (or trickle
//! bytes until the handshake timeout) cannot take the connection slots that
//! executors need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Handshakes in progress at once, from everyone.
pub const MAX_HANDSHAKES: usize = 128;
/// Handshakes in progress at once from one address.
pub const MAX_HANDSHAKES_PER_ADDRESS: u32 = 32;

/// Handshakes in progress, in all and per address.
#[derive(Debug, Default, Clone)]
pub struct Admission {
    in_progress: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// A handshake's place; given back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot {
    admission: Admission,
    ip: IpAddr,
}

impl Admission {
    /// A slot for a handshake from `ip`, or `None` when the caps are reached.
    pub fn admit(&self, ip: IpAddr) -> Option<HandshakeSlot> {
        let mut in_progress = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        let total: u32 = in_progress.values().sum();
        let from_ip = in_progress.entry(ip).or_insert(0);
        if total as usize >= MAX_HANDSHAKES || *from_ip >= MAX_HANDSHAKES_PER_ADDRESS {
            if *from_ip == 0 {
                in_progress.remove(&ip);
            }
            return None;
        }
        *from_ip += 1;
        Some(HandshakeSlot {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut in_progress = self.admission.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_progress.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                in_progress.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all_and_slots_come_back() {
        let admission = Admission::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| admission.admit(a).unwrap())
            .collect();
        assert!(admission.admit(a).is_none(), "one address is capped");
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let other = admission.admit(b).expect("another address still gets in");
        drop(held);
        assert!(admission.admit(a).is_some(), "slots come back when dropped");
        drop(other);
        let mut many = Vec::new();
        for i in 0..MAX_HANDSHAKES {
            let ip: IpAddr = format!("10.1.{}.{}", i / 250, i % 250 + 1).parse().unwrap();
            many.push(admission.admit(ip).unwrap());
        }
        assert!(admission.admit("10.2.0.1".parse().unwrap()).is_none(), "capped in all");
    }
}
