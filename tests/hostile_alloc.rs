//! A hostile length never makes the reader reserve more than the frame limit: a counting global
//! allocator tracks live heap bytes while hostile streams go through the server's read loop shape
//! (a `BytesMut` refilled by reads), `FrameDecoder` and the record `Encoder`. The peak stays
//! under a bound tied to `max_frame_bytes` and the read size, whatever the stream declares or
//! however long it runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use bytes::BytesMut;
use syslog_sink::classify::Classifier;
use syslog_sink::framing::{FrameDecoder, FrameKind, FramingMode};
use syslog_sink::metrics::BatchCounts;
use syslog_sink::parse::Format;
use syslog_sink::record::{Encoder, RecordContext};
use tokio_util::codec::Decoder;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, SeqCst) + n;
    PEAK.fetch_max(live, SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), SeqCst);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, SeqCst);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MAX: usize = 64 * 1024;
const READ: usize = 16 * 1024;
/// What one connection may hold: the read buffer (`max_frame_bytes` of a frame plus a read,
/// doubled by `Vec` growth), one record of a full frame, and small change.
const BOUND: usize = 4 * (MAX + READ) + 64 * 1024;

/// Streams `head` then `body_len` bytes of `fill` through the read loop, decoder and encoder
/// (the input is generated as it is read, never held whole); returns (peak live bytes above
/// the start, frames).
fn run(mode: FramingMode, head: &[u8], fill: u8, body_len: usize) -> (usize, Vec<FrameKind>) {
    let classifier = Classifier::builtin();
    let encoder = Encoder::new(Format::Auto, &classifier);
    let ctx = RecordContext {
        received_at: "2026-11-26T10:50:29.123456Z",
        peer: Some("127.0.0.1:5140"),
        peer_cert: None,
    };
    let mut counts = BatchCounts::new(classifier.categories().len());
    let mut kinds = Vec::new();
    let filler = vec![fill; READ];
    let base = LIVE.load(SeqCst);
    PEAK.store(base, SeqCst);
    let mut decoder = FrameDecoder::new(mode, MAX);
    let mut buf = BytesMut::with_capacity(READ);
    let mut json = BytesMut::new();
    let mut head = head;
    let mut left = body_len;
    loop {
        // The server's read loop: keep at least half a read of room, read what fits.
        if buf.capacity() - buf.len() < READ / 2 {
            buf.reserve(READ);
        }
        let room = buf.capacity() - buf.len();
        let n = if !head.is_empty() {
            let n = head.len().min(room);
            buf.extend_from_slice(&head[..n]);
            head = &head[n..];
            n
        } else {
            let n = left.min(room).min(READ);
            buf.extend_from_slice(&filler[..n]);
            left -= n;
            n
        };
        let eof = n == 0;
        loop {
            let next = if eof {
                decoder.decode_eof(&mut buf)
            } else {
                decoder.decode(&mut buf)
            };
            let Some(frame) = next.expect("decoder never fails") else {
                break;
            };
            encoder.encode(&frame, &ctx, &mut json, &mut counts);
            kinds.push(frame.kind);
            // The output wrote the record.
            json.clear();
        }
        if eof {
            break;
        }
    }
    drop((buf, json, decoder));
    (PEAK.load(SeqCst) - base, kinds)
}

#[test]
fn hostile_lengths_stay_within_the_frame_limit() {
    let body = 4 << 20;
    let cases: [(&str, FramingMode, &[u8], u8); 5] = [
        (
            "999999999999 + data",
            FramingMode::Octet,
            b"999999999999 ",
            b'x',
        ),
        (
            "u64::MAX + data",
            FramingMode::Auto,
            b"18446744073709551615 ",
            b'x',
        ),
        ("4 MiB of digits", FramingMode::Octet, b"", b'7'),
        (
            "LF frame with no LF",
            FramingMode::Lf,
            b"<14>1 - h app - - - ",
            b'y',
        ),
        ("bad MSG-LEN, no LF", FramingMode::Auto, b"12x", b'z'),
    ];
    for (name, mode, head, fill) in cases {
        let (peak, kinds) = run(mode, head, fill, body);
        println!("{name}: peak {peak} bytes over {body} bytes of input, {kinds:?}");
        assert_eq!(kinds.len(), 1, "{name}: {kinds:?}");
        assert!(kinds[0] != FrameKind::Complete, "{name}");
        assert!(
            peak <= BOUND,
            "{name}: peak {peak} live bytes, bound {BOUND} (max_frame_bytes {MAX})"
        );
    }
    // The counter works: holding the whole body would exceed the bound.
    let (peak, _) = run(FramingMode::Octet, format!("{body} ").as_bytes(), b'x', 0);
    assert!(peak < BOUND);
    let base = LIVE.load(SeqCst);
    PEAK.store(base, SeqCst);
    let held = std::hint::black_box(vec![0u8; body]);
    assert!(PEAK.load(SeqCst) - base >= body);
    drop(held);
}
