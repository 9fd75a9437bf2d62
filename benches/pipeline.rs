//! Per-stage cost of the hot path on the PKS sample (2,000 messages, 1.09 MB): framing,
//! parsing, parsing + classification, and the whole record (parse + classify + JSON).
//!
//!     cargo bench --bench pipeline
//!
//! Throughput is reported per message (elements) and per byte in the group names.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use syslog_sink::classify::Classifier;
use syslog_sink::framing::{decode_all, FramingMode, DEFAULT_MAX_FRAME_BYTES};
use syslog_sink::metrics::BatchCounts;
use syslog_sink::parse::{parse, Format};
use syslog_sink::record::{Encoder, RecordContext};

const SAMPLE: &[u8] = include_bytes!("../tests/data/pks-sink-2k.octet");

fn stages(c: &mut Criterion) {
    let stream = Bytes::from_static(SAMPLE);
    let frames = decode_all(FramingMode::Auto, DEFAULT_MAX_FRAME_BYTES, stream.clone());
    let n = frames.len() as u64;
    let classifier = Classifier::builtin();

    let mut g = c.benchmark_group("per_message");
    g.throughput(Throughput::Elements(n));
    g.bench_function("framing_auto", |b| {
        b.iter(|| decode_all(FramingMode::Auto, DEFAULT_MAX_FRAME_BYTES, stream.clone()).len())
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            frames
                .iter()
                .filter(|f| parse(&f.data, Format::Auto).is_ok())
                .count()
        })
    });
    g.bench_function("parse_classify", |b| {
        b.iter(|| {
            frames
                .iter()
                .filter_map(|f| parse(&f.data, Format::Auto).ok())
                .filter_map(|m| classifier.classify(&m).and_then(|k| k.category))
                .count()
        })
    });
    let encoder = Encoder::new(Format::Auto, &classifier);
    let ctx = RecordContext {
        received_at: "2026-11-26T10:00:00.000000Z",
        peer: Some("10.0.0.1:50000"),
    };
    let mut out = BytesMut::with_capacity(4 << 20);
    let mut counts = BatchCounts::new(classifier.categories().len());
    g.bench_function("record_json", |b| {
        b.iter(|| {
            out.clear();
            for f in &frames {
                encoder.encode(f, &ctx, &mut out, &mut counts);
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).sample_size(30);
    targets = stages
}
criterion_main!(benches);
