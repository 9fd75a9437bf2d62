//! Runs every case of `tests/data/framing.jsonl` (the RFC 6587 conformance corpus) through
//! [`FrameDecoder`], whole and in 1-byte and pseudo-random chunks.
//!
//! Rules (corpus README §2 and §7): the `Complete` frames yielded before the first error must equal
//! `expect_frames` (or `alt_expect_frames`); a case with `expect_error` must then yield an
//! `Error`/`Truncated` frame with that code; a case without it must yield no error at all. What
//! the decoder does after the first error (it resynchronises, the reference closes the
//! connection) is not compared.
//!
//! Trailers: `LF` → [`Trailer::Lf`], `CRLF` → [`Trailer::CrLf`], `NUL` → [`Trailer::Nul`],
//! `LF|NUL` → [`Trailer::LfOrNul`]; `auto` cases use the default trailer (CRLF).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use syslog_sink::framing::{Frame, FrameDecoder, FrameKind, FramingMode, Trailer};
use tokio_util::codec::Decoder;

#[derive(Deserialize)]
struct Case {
    id: String,
    mode: String,
    trailer: Option<String>,
    max_frame_len: usize,
    stream_b64: String,
    expect_frames: Vec<String>,
    expect_error: Option<String>,
    alt_expect_frames: Option<Vec<String>>,
}

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).expect("corpus base64")
}

fn decoder(case: &Case) -> FrameDecoder {
    let mode = match case.mode.as_str() {
        "octet" => FramingMode::Octet,
        "nontransparent" => FramingMode::Lf,
        "auto" => FramingMode::Auto,
        other => panic!("{}: unknown mode {other}", case.id),
    };
    let trailer = match case.trailer.as_deref() {
        None => {
            assert_ne!(mode, FramingMode::Lf, "{}: no trailer", case.id);
            Trailer::default()
        }
        Some("LF") => Trailer::Lf,
        Some("CRLF") => Trailer::CrLf,
        Some("NUL") => Trailer::Nul,
        Some("LF|NUL") => Trailer::LfOrNul,
        Some(other) => panic!("{}: unknown trailer {other}", case.id),
    };
    FrameDecoder::new(mode, case.max_frame_len).with_trailer(trailer)
}

/// Deterministic xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Feeds `stream` in chunks of `sizes()` bytes the way `Framed` does; checks that the spans tile the stream.
fn run(mut dec: FrameDecoder, stream: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = dec.decode(&mut buf).expect("decode never fails") {
            out.push(f);
        }
    }
    while let Some(f) = dec.decode_eof(&mut buf).expect("decode_eof never fails") {
        out.push(f);
    }
    assert!(buf.is_empty());
    let mut end = 0;
    for f in &out {
        assert_eq!(f.offset - f.dropped_before, end, "span gap before {f:?}");
        end = f.end_offset();
    }
    assert_eq!(end + dec.dropped_pending(), stream.len() as u64, "span sum");
    out
}

#[test]
fn framing_conformance() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/framing.jsonl"
    ))
    .expect("tests/data/framing.jsonl");
    let (mut cases, mut exact, mut alt) = (0, 0, 0);
    let mut failures = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("framing.jsonl line {}: {e}", line_no + 1));
        cases += 1;
        let stream = b64(&case.stream_b64);

        // Same frames whole, byte by byte and in pseudo-random chunks.
        let whole = decoder(&case).decode_all(Bytes::from(stream.clone()));
        let single = run(decoder(&case), &stream, &mut || 1);
        assert_eq!(single, whole, "{}: 1-byte chunks differ", case.id);
        for seed in 1..=4u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ line_no as u64 | 1);
            let max_chunk = [3, 17, 300, 9000][seed as usize - 1];
            let chunked = run(decoder(&case), &stream, &mut || {
                1 + (rng.next() % max_chunk) as usize
            });
            assert_eq!(chunked, whole, "{}: chunks (seed {seed}) differ", case.id);
        }

        // Complete frames up to the first error, and that error.
        let first_err = whole.iter().position(|f| f.kind != FrameKind::Complete);
        let complete: Vec<Vec<u8>> = whole[..first_err.unwrap_or(whole.len())]
            .iter()
            .map(|f| f.data.to_vec())
            .collect();
        let got_error = first_err.map(|i| whole[i].kind.error().expect("not complete").code());
        if got_error != case.expect_error.as_deref() {
            failures.push(format!(
                "{}: error {:?}, expected {:?}",
                case.id, got_error, case.expect_error
            ));
            continue;
        }
        let expect: Vec<Vec<u8>> = case.expect_frames.iter().map(|s| b64(s)).collect();
        let alt_expect: Option<Vec<Vec<u8>>> = case
            .alt_expect_frames
            .as_ref()
            .map(|v| v.iter().map(|s| b64(s)).collect());
        if complete == expect {
            exact += 1;
        } else if alt_expect.as_ref() == Some(&complete) {
            alt += 1;
        } else {
            failures.push(format!(
                "{}: frames {:?}, expected {:?} (alt {:?})",
                case.id,
                complete
                    .iter()
                    .map(|f| String::from_utf8_lossy(f))
                    .collect::<Vec<_>>(),
                expect
                    .iter()
                    .map(|f| String::from_utf8_lossy(f))
                    .collect::<Vec<_>>(),
                alt_expect,
            ));
        }
    }
    println!("framing conformance: {cases} cases, {exact} exact, {alt} via alt_expect_frames");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases, 47, "corpus size changed");
    assert_eq!(exact + alt, cases);
}
