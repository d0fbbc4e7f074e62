//! Property tests of the frame reader and message decoder on arbitrary
//! bytes: they never panic, and what they allocate is bounded by the frame
//! cap (plus serde's fixed 1 MiB limit on preallocating a sequence whose
//! declared length the input has not yet backed).
//!
//! A counting global allocator measures the allocations; this binary holds
//! only these tests, run one at a time under a lock, so the count is theirs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use deepdist_wire::proto::{self, FromClient, FromExecutor, Handshake, MessageReader, ToClient, ToExecutor};
use proptest::prelude::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), SeqCst) + layout.size();
        PEAK.fetch_max(live, SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Most bytes `f` had allocated at once beyond what was live before it.
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(SeqCst);
    PEAK.store(before, SeqCst);
    let out = f();
    (out, PEAK.load(SeqCst).saturating_sub(before))
}

/// serde preallocates at most 1 MiB for a sequence of declared length.
const SERDE_PREALLOCATION: usize = 1 << 20;

/// Frames read from `bytes` through a reader capped at `cap`, until the
/// stream ends or the first error.
fn read_all(bytes: Vec<u8>, cap: usize) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async move {
        let mut reader = MessageReader::new(&bytes[..], cap);
        let mut frames = 0;
        while let Ok(Some(_)) = reader.recv::<FromExecutor>().await {
            frames += 1;
        }
        frames
    })
}

/// Byte strings that start like real frames often enough to get past the
/// length prefix: a small length, then a valid message's first bytes or
/// noise.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let valid = proto::encode(&Handshake::hello(proto::Role::Executor, "p", 1)).unwrap();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        (proptest::collection::vec(any::<u8>(), 0..512), 0usize..64).prop_map(move |(noise, cut)| {
            let mut body = valid.to_vec();
            body.truncate(cut.min(body.len()));
            body.extend_from_slice(&noise);
            let mut out = (body.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&body);
            out
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let frame = proto::Bytes::from(bytes.clone());
        let (_, peak) = peak_allocation(|| {
            proto::decode::<Handshake>(frame.clone()).is_ok()
                | proto::decode::<FromExecutor>(frame.clone()).is_ok()
                | proto::decode::<ToExecutor>(frame.clone()).is_ok()
                | proto::decode::<FromClient>(frame.clone()).is_ok()
                | proto::decode::<ToClient>(frame.clone()).is_ok()
        });
        prop_assert!(peak <= 4 * bytes.len() + SERDE_PREALLOCATION + 4096, "{peak} bytes for a {}-byte frame", bytes.len());
    }

    #[test]
    fn the_frame_reader_never_buffers_beyond_its_cap(bytes in frame_like(), cap in 16usize..4096) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let (_, peak) = peak_allocation(|| read_all(bytes, cap));
        // The reader's buffer (at most the cap, after its 8 KiB start), the
        // decoded message, and the runtime's own fixed allocations.
        prop_assert!(peak <= 2 * cap + SERDE_PREALLOCATION + (64 << 10), "{peak} bytes with a cap of {cap}");
    }
}

#[test]
fn a_huge_length_prefix_is_refused_without_allocating_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // 0xFFFFFFFF promises 4 GiB; the reader must refuse on the prefix alone.
    let (frames, peak) = peak_allocation(|| read_all(vec![0xff; 64], 4096));
    assert_eq!(frames, 0);
    assert!(peak < 1 << 20, "{peak} bytes");
}
