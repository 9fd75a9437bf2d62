//! Parsing does not allocate: all 2,000 PKS frames parsed under `Format::Auto`, every SD param
//! walked through `chunks()`, every timestamp through `timestamp_parsed()`, with a counting global
//! allocator watching.

mod common;

use common::octet_frames;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use syslog_sink::parse::{parse, Format};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the test's own thread is counted: the harness's threads allocate at any time (it
    /// made this test fail now and then with a few allocations that were not parsing's).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Parses and walks every frame; returns (params, chunk bytes, timestamps, errors) so the work
/// cannot be optimised away.
fn walk(frames: &[&[u8]]) -> (usize, usize, usize, usize) {
    let (mut params, mut bytes, mut stamps, mut errors) = (0, 0, 0, 0);
    for frame in frames {
        match parse(frame, Format::Auto) {
            Ok(m) => {
                if let Some(ts) = m.timestamp_parsed() {
                    stamps += 1;
                    bytes += ts.timestamp_subsec_nanos() as usize % 2;
                }
                if let Some(sd) = m.structured_data {
                    for el in sd.elements() {
                        bytes += el.id.len();
                        for (name, value) in el.params() {
                            params += 1;
                            bytes += name.len() + value.chunks().map(str::len).sum::<usize>();
                        }
                    }
                }
                bytes += m.msg.map_or(0, <[u8]>::len);
            }
            Err(_) => errors += 1,
        }
    }
    (params, bytes, stamps, errors)
}

#[test]
fn parsing_pks_sample_does_not_allocate() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("read sample");
    let frames = octet_frames(&data);
    assert_eq!(frames.len(), 2000);
    COUNTING.with(|c| c.set(true));

    let before = ALLOCS.load(Ordering::SeqCst);
    let (params, bytes, stamps, errors) = walk(&frames);
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;

    println!("alloc: {allocs} allocations for 2000 frames, {params} params, {stamps} timestamps");
    assert_eq!(errors, 0);
    // 11 frames of the sample have a NILVALUE TIMESTAMP.
    assert_eq!(stamps, 1989);
    assert!(params > 2000 && bytes > 0);
    assert_eq!(allocs, 0, "parsing allocated");

    // The counter works: an escaped value's `unescaped()` allocates.
    let frame = br#"<13>1 - h a - - [id v="a\"b"]"#;
    let before = ALLOCS.load(Ordering::SeqCst);
    let owned = parse(frame, Format::Auto)
        .ok()
        .and_then(|m| m.structured_data)
        .and_then(|sd| sd.element("id"))
        .and_then(|el| el.param("v"))
        .map(|v| v.unescaped().into_owned());
    assert_eq!(owned.as_deref(), Some("a\"b"));
    assert!(
        ALLOCS.load(Ordering::SeqCst) > before,
        "allocation counter does not count"
    );
}
