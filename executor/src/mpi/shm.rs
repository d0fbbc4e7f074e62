//! Where followers leave their gradients: one block of shared memory per
//! follower (`MPI_Win_allocate_shared`), which the leader reads in place.
//! A reduction through messages would copy each follower's gradient into
//! the leader first (about 1 ms for 2.6 MB here, on the leader's critical
//! path); reading it where it lies leaves only the sum.
//!
//! Order is kept by messages, as MPI's unified memory model allows: a
//! follower writes its block, `MPI_Win_sync`s, then sends its trailer; the
//! leader receives every trailer, `MPI_Win_sync`s, then reads, and sends
//! the next minibatch (after which the follower writes again) only once it
//! has summed.
//!
//! The calls' return codes are not checked: MPI's default error handler,
//! which windows inherit from their communicator, aborts the run on any
//! error — the group's failure rule.

use std::os::raw::{c_int, c_void};

use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};

/// The followers' blocks of `len` values each.
pub struct Blocks {
    win: ffi::MPI_Win,
    len: usize,
    /// This rank's block (a follower's; the leader has none).
    own: *mut f32,
    /// The leader's view of every follower's block, by rank − 1.
    others: Vec<*const f32>,
}

// SAFETY: the window is used under the same rule as the communicator
// (MPI_THREAD_SERIALIZED, one thread at a time: behind the leader's mutex,
// or owned by the follower's loop), and the pointers are into memory MPI
// keeps mapped until `free`.
unsafe impl Send for Blocks {}

impl Blocks {
    /// Collective over `group`: every rank calls it with the same `len`.
    pub fn allocate(group: &SimpleCommunicator, len: usize) -> Blocks {
        let leader = group.rank() == 0;
        let bytes = if leader { 0 } else { len * size_of::<f32>() };
        let mut own: *mut f32 = std::ptr::null_mut();
        // SAFETY: plain MPI calls with valid out-pointers; the window lives
        // until `free`, and with it the blocks the pointers point into.
        unsafe {
            let mut win = ffi::RSMPI_WIN_NULL;
            ffi::MPI_Win_allocate_shared(
                bytes as ffi::MPI_Aint,
                size_of::<f32>() as c_int,
                ffi::RSMPI_INFO_NULL,
                group.as_raw(),
                (&mut own as *mut *mut f32).cast::<c_void>(),
                &mut win,
            );
            // One passive epoch for the window's life: MPI_Win_sync inside it
            // makes a rank's writes visible to the others.
            ffi::MPI_Win_lock_all(ffi::MPI_MODE_NOCHECK as c_int, win);
            let others = if leader {
                (1..group.size())
                    .map(|rank| {
                        let (mut size, mut unit, mut base) = (0, 0, std::ptr::null_mut::<f32>());
                        ffi::MPI_Win_shared_query(
                            win,
                            rank,
                            &mut size,
                            &mut unit,
                            (&mut base as *mut *mut f32).cast::<c_void>(),
                        );
                        base.cast_const()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Blocks { win, len, own, others }
        }
    }

    /// Values per block.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes this rank's writes visible to the others, and theirs to it
    /// (with a message between them to order the two).
    pub fn sync(&self) {
        // SAFETY: the window is alive and in its passive epoch.
        unsafe { ffi::MPI_Win_sync(self.win) };
    }

    /// A follower's own block, to write its contribution into.
    pub fn own(&mut self) -> &mut [f32] {
        if self.own.is_null() {
            return &mut [];
        }
        // SAFETY: MPI allocated `len` f32s here for this rank; `&mut self`
        // makes this the only view of them in this process.
        unsafe { std::slice::from_raw_parts_mut(self.own, self.len) }
    }

    /// The leader's sum of every follower's block into `sum`.
    pub fn add_into(&self, sum: &mut [f32]) {
        for &block in &self.others {
            // SAFETY: each follower's block holds `len` f32s, and the
            // follower does not write it until the leader's next message.
            let block = unsafe { std::slice::from_raw_parts(block, self.len) };
            sum.iter_mut().zip(block).for_each(|(s, b)| *s += b);
        }
    }

    /// Collective: ends the epoch and frees the window and its blocks.
    pub fn free(mut self) {
        // SAFETY: every rank frees together; nothing reads the blocks after.
        unsafe {
            ffi::MPI_Win_unlock_all(self.win);
            ffi::MPI_Win_free(&mut self.win);
        }
    }
}
