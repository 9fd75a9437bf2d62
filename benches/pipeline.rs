//! Per-stage cost of the hot path on the PKS sample (2,000 messages, 1.09 MB): framing,
//! parsing, parsing + classification, and the whole record (parse + classify + JSON); and our
//! parser beside `syslog_loose` and `syslog_rfc5424` on the same frames, with the ratios printed
//! at the end (interleaved rounds, medians).
//!
//!     cargo bench --bench pipeline
//!
//! Throughput is reported per message (criterion's elements).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};
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
        peer_cert: None,
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

/// The frames every parser can take (`&str` input: the 0.4 % non-UTF-8 frames are left out).
fn utf8_frames() -> Vec<String> {
    decode_all(
        FramingMode::Auto,
        DEFAULT_MAX_FRAME_BYTES,
        Bytes::from_static(SAMPLE),
    )
    .iter()
    .filter_map(|f| String::from_utf8(f.data.to_vec()).ok())
    .collect()
}

/// Ours: parse, then walk every SD param (unescaped) and the timestamp, as the peers do eagerly.
fn ours(frames: &[&str]) -> usize {
    let mut n = 0;
    for f in frames {
        if let Ok(m) = parse(f.as_bytes(), Format::Auto) {
            n += m.timestamp_parsed().is_some() as usize;
            for el in m.structured_data.iter().flat_map(|sd| sd.elements()) {
                for (_, v) in el.params() {
                    n += v.chunks().map(str::len).sum::<usize>();
                }
            }
        }
    }
    n
}

fn loose(frames: &[&str]) -> usize {
    frames
        .iter()
        .map(|f| {
            syslog_loose::parse_message(f, syslog_loose::Variant::Either)
                .structured_data
                .len()
        })
        .sum()
}

fn rfc5424(frames: &[&str]) -> usize {
    frames
        .iter()
        .filter_map(|f| syslog_rfc5424::parse_message(f).ok())
        .map(|m| m.sd.len())
        .sum()
}

fn peers(c: &mut Criterion) {
    let owned = utf8_frames();
    let frames: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("parser_vs_peers");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("syslog_sink", |b| b.iter(|| ours(&frames)));
    g.bench_function("syslog_loose", |b| b.iter(|| loose(&frames)));
    g.bench_function("syslog_rfc5424", |b| b.iter(|| rfc5424(&frames)));
    g.finish();
}

/// Interleaved rounds of the three parsers over the same frames; prints medians and ratios.
fn print_ratios() {
    let owned = utf8_frames();
    let frames: Vec<&str> = owned.iter().map(String::as_str).collect();
    let time = |f: &dyn Fn(&[&str]) -> usize| {
        let t = std::time::Instant::now();
        std::hint::black_box(f(&frames));
        t.elapsed().as_secs_f64()
    };
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        a.push(time(&ours));
        b.push(time(&loose));
        c.push(time(&rfc5424));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b, c) = (median(&mut a), median(&mut b), median(&mut c));
    let rate = |s: f64| frames.len() as f64 / s;
    println!(
        "parser ratios on {} PKS frames (30 interleaved rounds, medians): syslog-sink {:.0} msg/s, \
         syslog_loose {:.0} msg/s ({:.1}x), syslog_rfc5424 {:.0} msg/s ({:.1}x)",
        frames.len(),
        rate(a),
        rate(b),
        b / a,
        rate(c),
        c / a
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).sample_size(30);
    targets = stages, peers
}

fn main() {
    benches();
    print_ratios();
    Criterion::default().configure_from_args().final_summary();
}
