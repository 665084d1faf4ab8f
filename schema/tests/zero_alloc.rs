//! The read path allocates nothing: once a decoder's buffer has grown to hold
//! a frame, receiving further batches and reading every field of every
//! message makes no heap allocation at all.

// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to
// the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use schema::{FrameDecoder, FrameEncoder, FrameView, Header, Message, Route};

struct Counting;

thread_local! {
    /// Set on the test's thread while it measures: allocations of other
    /// threads (the test harness's) are not the read path's.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same layout, forwarded as the caller gave it.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn receiving_and_reading_batches_allocates_nothing() {
    let messages: Vec<Message> = (0..64u64)
        .map(|i| Message {
            header: Header {
                id: format!("msg-{i}"),
                seq: i + 1,
                resource_version: 100 + i,
                ..Header::default()
            },
            route: Route {
                source: "edgecontroller".into(),
                group: "resource".into(),
                operation: "update".into(),
                resource: format!("default/pod/p{i}"),
                ..Route::default()
            },
            content: vec![b'x'; 256],
        })
        .collect();
    let mut wire = Vec::new();
    FrameEncoder::default()
        .batch(messages.iter().map(Message::as_ref), &mut wire)
        .unwrap();

    let mut decoder = FrameDecoder::default();
    let receive = |decoder: &mut FrameDecoder| {
        let mut read = 0u64;
        for piece in wire.chunks(4096) {
            decoder.handle_bytes(piece);
            while let Some(frame) = decoder.poll_frame().unwrap() {
                assert!(matches!(frame, FrameView::Batch(_)));
                for m in frame.messages() {
                    read += (m.payload_len() + m.header.id.len()) as u64 + m.header.seq;
                }
            }
        }
        read
    };
    // The first frame grows the decoder's buffer.
    let expected = receive(&mut decoder);

    COUNTING.with(|c| c.set(true));
    let mut total = 0;
    for _ in 0..100 {
        total += receive(&mut decoder);
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(total, 100 * expected);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "the read path allocated"
    );
}
