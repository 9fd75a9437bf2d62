//! The real PKS/TKGI sample (`tests/data/pks-sink-2k.{octet,lf}`, 2,000 messages each, every one
//! ending in ` seq=NNNNNNNN` before its final LF) decodes to 2,000 complete frames, in order.

use bytes::{Bytes, BytesMut};
use syslog_sink::framing::{
    decode_all, Frame, FrameDecoder, FrameKind, FramingMode, DEFAULT_MAX_FRAME_BYTES,
};
use tokio_util::codec::Decoder;

fn sample(name: &str) -> Bytes {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// `seq=NNNNNNNN` at the end of `data`, after an optional final `\r\n` / `\n`.
fn seq(data: &[u8]) -> Option<u32> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let data = data.strip_suffix(b"\r").unwrap_or(data);
    let digits = data.get(data.len().checked_sub(8)?..)?;
    data.strip_suffix(digits)?.strip_suffix(b" seq=")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Feeds the stream in 1,448-byte segments (a TCP MSS), as `Framed` would.
fn decode_segments(mode: FramingMode, stream: &[u8]) -> Vec<Frame> {
    let mut dec = FrameDecoder::new(mode, DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in stream.chunks(1448) {
        buf.extend_from_slice(piece);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            out.push(f);
        }
    }
    while let Some(f) = dec.decode_eof(&mut buf).unwrap() {
        out.push(f);
    }
    out
}

fn check(file: &str, mode: FramingMode, octet: bool) {
    let stream = sample(file);
    let frames = decode_all(mode, DEFAULT_MAX_FRAME_BYTES, stream.clone());
    assert_eq!(frames.len(), 2000, "{file} in {mode:?}");
    let mut with_lf = 0;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.kind, FrameKind::Complete, "{file} {mode:?} frame {i}");
        assert_eq!(
            seq(&f.data),
            Some(i as u32 + 1),
            "{file} {mode:?} frame {i}: {:?}",
            String::from_utf8_lossy(&f.data[f.data.len().saturating_sub(40)..])
        );
        // Octet counting keeps a counted final LF (most PKS frames have one, some not); LF framing
        // removes the trailer and a CR before it.
        if octet {
            with_lf += usize::from(f.data.ends_with(b"\n"));
        } else {
            assert!(!f.data.ends_with(b"\n") && !f.data.ends_with(b"\r"));
        }
    }
    if octet {
        assert!(
            with_lf > 1000,
            "{file}: only {with_lf} frames keep their counted LF"
        );
    }
    let last = frames.last().map_or(0, Frame::end_offset);
    assert_eq!(
        last,
        stream.len() as u64,
        "{file}: spans do not cover the stream"
    );
    assert_eq!(decode_segments(mode, &stream), frames, "{file} in segments");
}

#[test]
fn pks_octet_in_octet_mode() {
    check("pks-sink-2k.octet", FramingMode::Octet, true);
}

#[test]
fn pks_octet_in_auto_mode() {
    check("pks-sink-2k.octet", FramingMode::Auto, true);
}

#[test]
fn pks_lf_in_lf_mode() {
    check("pks-sink-2k.lf", FramingMode::Lf, false);
}

#[test]
fn pks_lf_in_auto_mode() {
    check("pks-sink-2k.lf", FramingMode::Auto, false);
}
