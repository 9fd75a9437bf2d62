//! Parse → classify → record: arbitrary bytes as a frame, in every [`Format`] and as every
//! frame kind, through `parse::parse`, `Classifier::classify` and `record::Encoder`.
//!
//! Input layout: `[kind, frame...]`.
//!
//! Checks: no panic; the record is one line of valid JSON (a single `\n`, at the end); a frame
//! that did not parse keeps its exact bytes in `raw` / `raw_base64`; a message that is not UTF-8
//! keeps its exact bytes in `message_base64`; facility and severity are PRI's.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use syslog_sink::classify::Classifier;
use syslog_sink::framing::{Frame, FrameErrorKind, FrameKind};
use syslog_sink::metrics::BatchCounts;
use syslog_sink::parse::{self, Format};
use syslog_sink::record::{strip_trailing_newline, Encoder, RecordContext};

fn kind(b: u8) -> FrameKind {
    match b % 5 {
        0 | 1 => FrameKind::Complete,
        2 => FrameKind::Truncated {
            reason: FrameErrorKind::FrameTooLong,
            declared_length: Some(u64::MAX),
        },
        3 => FrameKind::Truncated {
            reason: FrameErrorKind::EofWithoutTrailer,
            declared_length: None,
        },
        _ => FrameKind::Error(FrameErrorKind::MsgLenLeadingZero),
    }
}

fn b64(v: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

/// `raw` (or `raw_base64` when present) is exactly `data`.
fn check_raw(rec: &Value, data: &[u8]) {
    match rec.get("raw_base64") {
        Some(v) => assert_eq!(b64(v).as_deref(), Some(data), "raw_base64 of {rec}"),
        None => assert_eq!(
            rec["raw"].as_str().map(str::as_bytes),
            Some(data),
            "raw of {rec}"
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, frame_bytes)) = data.split_first() else {
        return;
    };
    // Built once: the rule automaton costs far more than one run.
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    let classifier = CLASSIFIER.get_or_init(Classifier::builtin);
    let frame = Frame {
        offset: 0,
        data: Bytes::copy_from_slice(frame_bytes),
        kind: kind(k),
        wire_len: frame_bytes.len() as u64,
        dropped_before: 0,
    };
    let ctx = RecordContext {
        received_at: "2026-11-26T10:50:29.123456Z",
        peer: Some("127.0.0.1:5140"),
        peer_cert: None,
    };
    for format in [Format::Auto, Format::Rfc5424, Format::Rfc3164] {
        let parsed = parse::parse(frame_bytes, format);
        if let Ok(m) = &parsed {
            // Walk everything the encoder and classifier may touch.
            let _ = classifier.classify(m);
            let _ = m.timestamp_parsed();
            if let Some(sd) = &m.structured_data {
                for el in sd.elements() {
                    for (_, v) in el.params() {
                        let _ = v.unescaped();
                    }
                }
            }
        }
        let encoder = Encoder::new(format, classifier);
        let mut out = BytesMut::new();
        let mut counts = BatchCounts::new(classifier.categories().len());
        encoder.encode(&frame, &ctx, &mut out, &mut counts);
        assert_eq!(counts.records, 1);
        assert_eq!(out.last(), Some(&b'\n'), "record does not end with LF");
        assert_eq!(
            memchr_count(&out),
            1,
            "record is not one line: {:?}",
            String::from_utf8_lossy(&out)
        );
        let rec: Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => panic!("invalid JSON ({e}): {:?}", String::from_utf8_lossy(&out)),
        };
        assert!(rec.is_object());
        if let FrameKind::Error(_) = frame.kind {
            assert!(rec.get("framing_error").is_some());
            check_raw(&rec, frame_bytes);
            continue;
        }
        match parsed {
            Err(_) => {
                assert!(rec.get("parse_error").is_some(), "{rec}");
                check_raw(&rec, frame_bytes);
            }
            Ok(m) => {
                assert!(rec.get("parse_error").is_none(), "{rec}");
                assert_eq!(rec["facility"], u64::from(m.facility()));
                assert_eq!(rec["severity"], u64::from(m.severity()));
                if let Some(msg) = m.msg {
                    let text = strip_trailing_newline(msg);
                    match rec.get("message_base64") {
                        Some(v) => assert_eq!(b64(v).as_deref(), Some(text)),
                        None => assert_eq!(rec["message"].as_str().map(str::as_bytes), Some(text)),
                    }
                }
            }
        }
        if let FrameKind::Truncated { .. } = frame.kind {
            assert_eq!(rec["truncated"], true);
        }
    }
});

fn memchr_count(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}
