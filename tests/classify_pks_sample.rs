//! The classifier core (`Classifier::classify_parts`) against the 2,000-message PKS sink sample:
//! every message must give exactly the kind, category, namespace, object, container and vm_id of
//! `tests/data/pks-sink-2k.expect.jsonl`.
//!
//! This test does not use the crate's parser: it cuts the octet-counted stream and reads
//! APP-NAME, the `kubernetes@47450` SD params and MSG with a small helper of its own, so that it
//! checks the classifier alone. `tests/classify_samples.rs` runs the same check through
//! `parse::parse` + `Classifier::classify`.

mod common;

use common::octet_frames;
use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use syslog_sink::classify::{Classifier, K8sInfo, SdValues, SD_ID};

const STREAM: &[u8] = include_bytes!("data/pks-sink-2k.octet");
const EXPECT: &str = include_str!("data/pks-sink-2k.expect.jsonl");

/// What the test needs from one RFC 5424 frame.
struct Parts<'a> {
    app_name: Option<&'a str>,
    /// Params of the `kubernetes@47450` element: name and raw (escaped) value.
    k8s_params: Vec<(&'a str, &'a str)>,
    msg: &'a [u8],
}

/// Test-only reader of `<PRI>1 TS HOST APP PROCID MSGID SD [SP MSG]` (SD: `-` or elements with
/// `\"`, `\\`, `\]` escapes). Panics on anything else: the sample is well-formed.
fn read_parts(frame: &[u8]) -> Parts<'_> {
    let mut pos = 0;
    let mut fields = Vec::new();
    for _ in 0..6 {
        let sp = frame[pos..]
            .iter()
            .position(|&b| b == b' ')
            .expect("header field followed by SP");
        fields.push(std::str::from_utf8(&frame[pos..pos + sp]).expect("ASCII header"));
        pos += sp + 1;
    }
    let app_name = Some(fields[3]).filter(|a| *a != "-");

    let mut k8s_params = Vec::new();
    if frame[pos] == b'-' {
        pos += 1;
    } else {
        while frame.get(pos) == Some(&b'[') {
            pos += 1;
            let id_end = pos
                + frame[pos..]
                    .iter()
                    .position(|&b| b == b' ' || b == b']')
                    .expect("SD-ID end");
            let id = std::str::from_utf8(&frame[pos..id_end]).expect("UTF-8 SD-ID");
            pos = id_end;
            while frame[pos] == b' ' {
                pos += 1;
                let eq = pos + frame[pos..].iter().position(|&b| b == b'=').expect("=");
                let name = std::str::from_utf8(&frame[pos..eq]).expect("UTF-8 PARAM-NAME");
                assert_eq!(frame[eq + 1], b'"', "quoted PARAM-VALUE");
                let vstart = eq + 2;
                let mut i = vstart;
                while frame[i] != b'"' {
                    i += if frame[i] == b'\\' { 2 } else { 1 };
                }
                let value = std::str::from_utf8(&frame[vstart..i]).expect("UTF-8 PARAM-VALUE");
                if id == SD_ID {
                    k8s_params.push((name, value));
                }
                pos = i + 1;
            }
            assert_eq!(frame[pos], b']', "end of SD-ELEMENT");
            pos += 1;
        }
    }
    let msg: &[u8] = match frame.get(pos) {
        Some(b' ') => &frame[pos + 1..],
        None => b"",
        Some(_) => panic!("SD not followed by SP"),
    };
    let msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    Parts {
        app_name,
        k8s_params,
        msg,
    }
}

/// RFC 5424 PARAM-VALUE unescaping (`\"`, `\\`, `\]`); borrows when there is nothing to do.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('"' | '\\' | ']')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    match &v[key] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{key}: unexpected {other}"),
    }
}

/// Compares one classification with its expect line; returns the category name (or kind).
fn check(c: &Classifier, seq: usize, got: Option<K8sInfo<'_>>, exp: &Value) -> String {
    let s = |o: &Option<Cow<'_, str>>| o.as_deref().map(str::to_owned);
    let exp_kind = opt_str(exp, "kind");
    let Some(info) = got else {
        assert_eq!(exp_kind, None, "seq {seq}: not classified, expected {exp}");
        return "(other sender)".to_owned();
    };
    assert_eq!(
        Some(info.kind.as_str().to_owned()),
        exp_kind,
        "seq {seq}: kind"
    );
    let category = info.category.map(|k| c.name(k).to_owned());
    assert_eq!(category, opt_str(exp, "category"), "seq {seq}: category");
    assert_eq!(
        s(&info.namespace),
        opt_str(exp, "namespace"),
        "seq {seq}: ns"
    );
    assert_eq!(s(&info.object), opt_str(exp, "object"), "seq {seq}: object");
    assert_eq!(
        s(&info.container),
        opt_str(exp, "container"),
        "seq {seq}: container"
    );
    assert_eq!(s(&info.vm_id), opt_str(exp, "vm_id"), "seq {seq}: vm_id");
    category.unwrap_or_else(|| "(pod log)".to_owned())
}

#[test]
fn pks_sample_2k_core() {
    let c = Classifier::builtin();
    let frames = octet_frames(STREAM);
    let expects: Vec<Value> = EXPECT
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(frames.len(), 2000);
    assert_eq!(expects.len(), 2000);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (frame, exp)) in frames.iter().zip(&expects).enumerate() {
        let seq = i + 1;
        assert_eq!(exp["seq"].as_u64(), Some(seq as u64));
        let parts = read_parts(frame);
        assert_eq!(
            parts.app_name.map(str::to_owned),
            opt_str(exp, "app_name"),
            "seq {seq}: test helper read the wrong APP-NAME"
        );
        let sd = SdValues::from_params(parts.k8s_params.iter().copied(), unescape);
        let got = c.classify_parts(parts.app_name, sd, parts.msg);
        *counts.entry(check(&c, seq, got, exp)).or_default() += 1;
    }

    println!("pks-sink-2k, classify_parts: {counts:#?}");
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert_eq!(n("(pod log)"), 1224);
    assert_eq!(n("(other sender)"), 55);
    let events: usize = counts
        .iter()
        .filter(|(k, _)| !k.starts_with('('))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(events, 721);
}
