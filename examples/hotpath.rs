//! The per-message hot path over the PKS sample, for instruction-count profiling:
//!
//!     cargo build --release --example hotpath
//!     valgrind --tool=callgrind target/release/examples/hotpath record 5
//!
//! Stages: `parse`, `classify` (parse + classify), `record` (parse + classify + JSON), `peers`
//! (our parser walking every SD param and the timestamp, as in `benches/pipeline.rs`), and the
//! peers on the same frames for comparison: `loose` (`syslog_loose`), `rfc5424`
//! (`syslog_rfc5424`), both over the UTF-8 frames as in `benches/pipeline.rs`.
//! The second argument is the number of passes over the 2,000 frames. `dump` writes the records of
//! one pass to stdout (to compare the JSON before and after a change).

use bytes::{Bytes, BytesMut};
use syslog_sink::classify::Classifier;
use syslog_sink::framing::{decode_all, FramingMode, DEFAULT_MAX_FRAME_BYTES};
use syslog_sink::metrics::BatchCounts;
use syslog_sink::parse::{parse, Format};
use syslog_sink::record::{Encoder, RecordContext};

const SAMPLE: &[u8] = include_bytes!("../tests/data/pks-sink-2k.octet");

fn main() {
    let mut args = std::env::args().skip(1);
    let stage = args.next().unwrap_or_else(|| "record".to_owned());
    let passes: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let frames = decode_all(
        FramingMode::Auto,
        DEFAULT_MAX_FRAME_BYTES,
        Bytes::from_static(SAMPLE),
    );
    let classifier = Classifier::builtin();
    let encoder = Encoder::new(Format::Auto, &classifier);
    let ctx = RecordContext {
        received_at: "2026-11-26T10:00:00.000000Z",
        peer: Some("10.0.0.1:50000"),
        peer_cert: None,
    };
    let mut out = BytesMut::with_capacity(4 << 20);
    let mut counts = BatchCounts::new(classifier.categories().len());
    if stage == "dump" {
        for f in &frames {
            encoder.encode(f, &ctx, &mut out, &mut counts);
        }
        std::io::Write::write_all(&mut std::io::stdout(), &out).expect("stdout");
        return;
    }
    let text: Vec<&str> = frames
        .iter()
        .filter_map(|f| std::str::from_utf8(&f.data).ok())
        .collect();
    let mut n = 0usize;
    for _ in 0..passes {
        match stage.as_str() {
            "parse" => {
                n += frames
                    .iter()
                    .filter(|f| parse(&f.data, Format::Auto).is_ok())
                    .count()
            }
            "classify" => {
                n += frames
                    .iter()
                    .filter_map(|f| parse(&f.data, Format::Auto).ok())
                    .filter_map(|m| classifier.classify(&m).and_then(|k| k.category))
                    .count()
            }
            "peers" => {
                for f in &text {
                    if let Ok(m) = parse(f.as_bytes(), Format::Auto) {
                        n += m.timestamp_parsed().is_some() as usize;
                        for el in m.structured_data.iter().flat_map(|sd| sd.elements()) {
                            for (_, v) in el.params() {
                                n += v.chunks().map(str::len).sum::<usize>();
                            }
                        }
                    }
                }
            }
            "loose" => {
                for f in &text {
                    n += syslog_loose::parse_message(f, syslog_loose::Variant::Either)
                        .structured_data
                        .len();
                }
            }
            "rfc5424" => {
                for f in &text {
                    n += syslog_rfc5424::parse_message(f).map_or(0, |m| m.sd.len());
                }
            }
            _ => {
                out.clear();
                for f in &frames {
                    encoder.encode(f, &ctx, &mut out, &mut counts);
                }
                n += out.len();
            }
        }
        n = std::hint::black_box(n);
    }
    println!("{stage}: {passes} passes over {} frames, {n}", frames.len());
}
