//! Property tests of the framing decoder: chunking never changes the frames, the frames' wire
//! spans tile the input exactly, and well-formed streams decode to exactly the frames written.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use syslog_sink::framing::{decode_all, Frame, FrameDecoder, FrameKind, FramingMode, Trailer};
use tokio_util::codec::Decoder;

fn mode() -> impl Strategy<Value = FramingMode> {
    prop_oneof![
        Just(FramingMode::Auto),
        Just(FramingMode::Octet),
        Just(FramingMode::Lf)
    ]
}

fn trailer() -> impl Strategy<Value = Trailer> {
    prop_oneof![
        Just(Trailer::CrLf),
        Just(Trailer::Lf),
        Just(Trailer::Nul),
        Just(Trailer::LfOrNul)
    ]
}

/// Bytes that like to hit the decoder's special cases.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => b'a'..=b'z',
        2 => b'0'..=b'9',
        1 => Just(b' '),
        1 => Just(b'\n'),
        1 => Just(b'\r'),
        1 => Just(0u8),
        1 => any::<u8>(),
    ]
}

/// Up to 47 interesting bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(interesting_byte(), 0..48)
}

/// One piece of a messy stream.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A valid octet frame (maybe over a small limit).
        3 => body().prop_filter("MSG-LEN >= 1", |b| !b.is_empty()).prop_map(|b| {
            let mut v = format!("{} ", b.len()).into_bytes();
            v.extend_from_slice(&b);
            v
        }),
        // A LF / CRLF / NUL terminated frame.
        3 => (body(), prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\0"[..])])
            .prop_map(|(mut b, t)| { b.extend_from_slice(t); b }),
        // An octet header that declares more than follows (cut or oversize).
        1 => (1u64..100_000, body()).prop_map(|(n, b)| {
            let mut v = format!("{n} ").into_bytes();
            v.extend_from_slice(&b);
            v
        }),
        // Digit runs, including absurd ones.
        1 => (1usize..40, any::<bool>()).prop_map(|(n, sp)| {
            let mut v = vec![b'9'; n];
            if sp { v.push(b' '); }
            v
        }),
        // Garbage.
        2 => body(),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(segment(), 0..12).prop_map(|s| s.concat())
}

/// Feeds `input` in chunks of the given sizes (cycled), then EOF; returns the frames and the
/// dropped bytes after the last one.
fn decode_chunked(mut dec: FrameDecoder, input: &[u8], sizes: &[usize]) -> (Vec<Frame>, u64) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            out.push(f);
        }
    }
    while let Some(f) = dec.decode_eof(&mut buf).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty());
    (out, dec.dropped_pending())
}

/// The frames' spans, with the dropped bytes between them, tile `input` exactly; each frame's data
/// is the expected part of its span; dropped bytes are only trailer or NUL octets.
fn check_tiling(input: &[u8], frames: &[Frame], dropped_tail: u64, max: usize) {
    let mut end = 0u64;
    for f in frames {
        assert_eq!(f.offset, end + f.dropped_before, "gap before {f:?}");
        let gap = &input[end as usize..f.offset as usize];
        assert!(
            gap.iter().all(|b| matches!(b, b'\n' | b'\r' | 0)),
            "{gap:?}"
        );
        assert!(f.wire_len >= f.data.len() as u64);
        assert!(f.data.len() <= max, "data over the limit");
        let span = &input[f.offset as usize..f.end_offset() as usize];
        let start = match f.kind {
            FrameKind::Complete | FrameKind::Truncated { .. } if span[0].is_ascii_digit() => {
                // Octet-counted (or an auto/LF frame that starts with a digit).
                let hdr = span.iter().position(|&b| b == b' ').map_or(0, |p| p + 1);
                if span[hdr..].starts_with(&f.data) {
                    hdr
                } else {
                    0
                }
            }
            _ => 0,
        };
        assert_eq!(&span[start..start + f.data.len()], &f.data[..], "{f:?}");
        end = f.end_offset();
    }
    assert_eq!(
        end + dropped_tail,
        input.len() as u64,
        "spans do not cover the input"
    );
    let tail = &input[end as usize..];
    assert!(
        tail.iter().all(|b| matches!(b, b'\n' | b'\r' | 0)),
        "{tail:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn chunking_does_not_change_frames_and_spans_tile(
        input in stream(),
        mode in mode(),
        trailer in trailer(),
        max in prop_oneof![1usize..64, Just(65536usize)],
        sizes in prop::collection::vec(1usize..20, 1..8),
    ) {
        let whole = FrameDecoder::new(mode, max)
            .with_trailer(trailer)
            .decode_all(Bytes::from(input.clone()));
        let (chunked, tail) = decode_chunked(FrameDecoder::new(mode, max).with_trailer(trailer), &input, &sizes);
        prop_assert_eq!(&chunked, &whole);
        let (single, _) = decode_chunked(FrameDecoder::new(mode, max).with_trailer(trailer), &input, &[1]);
        prop_assert_eq!(&single, &whole);
        check_tiling(&input, &whole, tail, max);
        if trailer == Trailer::CrLf {
            prop_assert_eq!(&decode_all(mode, max, Bytes::from(input.clone())), &whole);
        }
    }

    #[test]
    fn well_formed_auto_streams_decode_to_their_frames(
        frames in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(interesting_byte(), 1..60), any::<bool>()),
            0..16,
        ),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        // Octet frames carry anything; LF frames must not start with a digit or NUL, nor contain
        // LF, nor end with CR (CRLF trailer).
        let mut input = Vec::new();
        let mut expect = Vec::new();
        for (octet, mut body, crlf) in frames {
            if octet {
                input.extend_from_slice(format!("{} ", body.len()).as_bytes());
                input.extend_from_slice(&body);
            } else {
                body.retain(|&b| b != b'\n');
                while body.last() == Some(&b'\r') { body.pop(); }
                if matches!(body.first(), None | Some(b'0'..=b'9' | 0)) { body.insert(0, b'<'); }
                input.extend_from_slice(&body);
                input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            expect.push(body);
        }
        let (got, tail) = decode_chunked(FrameDecoder::new(FramingMode::Auto, 64), &input, &sizes);
        prop_assert_eq!(tail, 0);
        prop_assert!(got.iter().all(|f| f.kind == FrameKind::Complete && f.dropped_before == 0));
        let got: Vec<Vec<u8>> = got.iter().map(|f| f.data.to_vec()).collect();
        prop_assert_eq!(got, expect);
    }
}
