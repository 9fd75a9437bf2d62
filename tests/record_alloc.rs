//! The record encoder (parse + classify + JSON) does not allocate: all 2,000 PKS frames encoded
//! into a pre-reserved `BytesMut`, with a counting global allocator that counts only this test's
//! thread (the test harness's own threads allocate at any time).

mod common;

use bytes::{Bytes, BytesMut};
use syslog_sink::classify::Classifier;
use syslog_sink::framing::{decode_all, FramingMode, DEFAULT_MAX_FRAME_BYTES};
use syslog_sink::metrics::BatchCounts;
use syslog_sink::parse::{parse, Format};
use syslog_sink::record::{Encoder, RecordContext};

use common::alloc::{allocations, ThreadCounting};

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

#[test]
fn encoding_pks_sample_does_not_allocate() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("read sample");
    let frames = decode_all(
        FramingMode::Auto,
        DEFAULT_MAX_FRAME_BYTES,
        Bytes::from(data),
    );
    assert_eq!(frames.len(), 2000);
    let classifier = Classifier::builtin();
    let encoder = Encoder::new(Format::Auto, &classifier);
    let ctx = RecordContext {
        received_at: "2026-11-26T10:00:00.000000Z",
        peer: Some("10.0.0.1:50000"),
        peer_cert: None,
    };
    let mut out = BytesMut::with_capacity(8 << 20);
    let mut counts = BatchCounts::new(classifier.categories().len());

    // Which frames are on the happy path: UTF-8, and no backslash in the STRUCTURED-DATA.
    let happy: Vec<bool> = frames
        .iter()
        .map(|f| {
            std::str::from_utf8(&f.data).is_ok()
                && parse(&f.data, Format::Auto)
                    .ok()
                    .and_then(|m| m.structured_data)
                    .is_none_or(|sd| !sd.raw().contains('\\'))
        })
        .collect();

    let mut happy_allocs = 0;
    let mut other_allocs = 0;
    for (f, &h) in frames.iter().zip(&happy) {
        let ((), n) = allocations(|| {
            encoder.encode(f, &ctx, &mut out, &mut counts);
        });
        if h {
            happy_allocs += n;
        } else {
            other_allocs += n;
        }
    }
    let n_happy = happy.iter().filter(|&&h| h).count();
    println!(
        "alloc: {happy_allocs} allocations for {n_happy} happy-path frames, {other_allocs} for \
         the {} others (non-UTF-8 or SD escapes); {} records, {} bytes",
        frames.len() - n_happy,
        counts.records,
        out.len()
    );
    assert_eq!(counts.records, 2000);
    assert_eq!(counts.parse_errors, 0);
    assert!(n_happy > 1900, "the sample changed: {n_happy} happy frames");
    assert_eq!(happy_allocs, 0, "encoding allocated on the happy path");
    // Off the happy path too, for this sample: a non-UTF-8 MSG is written lossy without a
    // String, and its SD escapes are in params the classifier does not keep. (A kept
    // Kubernetes name with an escape, `namespace_name="a\"b"`, is unescaped into a String.)
    assert_eq!(other_allocs, 0, "encoding allocated off the happy path");

    // The counter works: a frame that does not parse allocates its error text.
    let bad = decode_all(
        FramingMode::Auto,
        DEFAULT_MAX_FRAME_BYTES,
        Bytes::from_static(b"5 \xff\xfe\xfd\xfc\xfb"),
    );
    let ((), n) = allocations(|| {
        encoder.encode(&bad[0], &ctx, &mut out, &mut counts);
    });
    assert!(n > 0, "allocation counter does not count");
}
