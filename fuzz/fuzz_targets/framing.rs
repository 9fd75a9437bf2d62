//! Framing: arbitrary bytes, cut into arbitrary reads, through `FrameDecoder` in every mode and
//! trailer with a small `max_frame_bytes`.
//!
//! Input layout: `[mode/trailer, max, k, k chunk sizes..., stream...]`.
//!
//! Checks: no panic; the same frames whatever the chunking (whole, the fuzzed chunk sizes, one
//! byte per read); the frame spans tile the stream (every byte is in exactly one span or counted
//! as dropped); each frame's data is the bytes of its span (after MSG-LEN SP for octet frames)
//! and at most `max_frame_bytes`; between reads the decoder holds at most `max_frame_bytes` plus a
//! header, and a hostile MSG-LEN never makes it reserve more than that.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use syslog_sink::framing::{Frame, FrameDecoder, FramingMode, Trailer};
use tokio_util::codec::Decoder;

/// MSG-LEN (at most 20 digits) and its SP, plus a CRLF trailer.
const SLACK: usize = 23;

struct Case<'a> {
    mode: FramingMode,
    trailer: Trailer,
    max: usize,
    chunks: Vec<usize>,
    stream: &'a [u8],
}

fn case(data: &[u8]) -> Option<Case<'_>> {
    let (&m, rest) = data.split_first()?;
    let (&x, rest) = rest.split_first()?;
    let (&k, rest) = rest.split_first()?;
    let mode = [FramingMode::Auto, FramingMode::Octet, FramingMode::Lf][usize::from(m % 3)];
    let trailer =
        [Trailer::CrLf, Trailer::Lf, Trailer::Nul, Trailer::LfOrNul][usize::from(m / 3 % 4)];
    // Mostly tiny limits (every oversize path), sometimes up to ~3.5 KiB.
    let max = if x < 200 {
        1 + usize::from(x % 40)
    } else {
        1 + usize::from(x - 200) * 64
    };
    let k = usize::from(k % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(k);
    let chunks = sizes.iter().map(|&s| usize::from(s).max(1)).collect();
    Some(Case {
        mode,
        trailer,
        max,
        chunks,
        stream,
    })
}

fn decoder(c: &Case<'_>) -> FrameDecoder {
    FrameDecoder::new(c.mode, c.max).with_trailer(c.trailer)
}

/// Feeds `c.stream` in reads of `sizes` (cycled), checking the buffer bound after each read.
fn chunked(c: &Case<'_>, sizes: &[usize]) -> (Vec<Frame>, u64) {
    let mut dec = decoder(c);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = c.stream;
    let mut i = 0;
    // The largest capacity BytesMut's own growth can reach with at most max + SLACK bytes kept
    // and reads of at most 255 bytes (Vec doubling, plus the consumed prefix it may keep).
    let cap_bound = 8 * (c.max + SLACK + 256);
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let before = buf.capacity();
            let next = dec.decode(&mut buf).expect("decode never fails");
            let after = buf.capacity();
            assert!(
                after <= before.max(cap_bound),
                "decoder grew the buffer from {before} to {after} (max {})",
                c.max
            );
            match next {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        assert!(
            buf.len() <= c.max + SLACK,
            "{} bytes held between reads with max {}",
            buf.len(),
            c.max
        );
    }
    while let Some(f) = dec.decode_eof(&mut buf).expect("decode_eof never fails") {
        frames.push(f);
    }
    assert!(buf.is_empty(), "{} bytes left after EOF", buf.len());
    assert!(dec.decode_eof(&mut buf).expect("eof").is_none());
    assert_eq!(dec.stream_offset(), c.stream.len() as u64);
    (frames, dec.dropped_pending())
}

fn check_tiling(c: &Case<'_>, frames: &[Frame], dropped_after: u64) {
    let input = c.stream;
    let mut end = 0u64;
    for f in frames {
        assert!(f.dropped_before <= f.offset, "{f:?}");
        assert_eq!(
            f.offset - f.dropped_before,
            end,
            "gap or overlap before {f:?}"
        );
        assert!(f.wire_len >= 1, "empty span {f:?}");
        assert!(f.data.len() <= c.max, "frame over the limit {f:?}");
        end = f.end_offset();
        assert!(end <= input.len() as u64, "span past the input {f:?}");
        // The data is the span's bytes: from its start, or after MSG-LEN SP.
        let span = &input[f.offset as usize..end as usize];
        let at_start = span.starts_with(&f.data);
        let after_header = span
            .iter()
            .position(|&b| b == b' ')
            .is_some_and(|p| span[p + 1..].starts_with(&f.data));
        assert!(at_start || after_header, "data not from its span {f:?}");
    }
    assert_eq!(
        end + dropped_after,
        input.len() as u64,
        "bytes unaccounted for"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(c) = case(data) else { return };
    let mut dec = decoder(&c);
    let whole = dec.decode_all(Bytes::copy_from_slice(c.stream));
    let dropped = dec.dropped_pending();
    check_tiling(&c, &whole, dropped);
    if !c.chunks.is_empty() {
        let (frames, d) = chunked(&c, &c.chunks);
        assert_eq!(frames, whole, "chunks {:?}", c.chunks);
        assert_eq!(d, dropped);
    }
    let (frames, d) = chunked(&c, &[1]);
    assert_eq!(frames, whole, "one byte per read");
    assert_eq!(d, dropped);
});
