//! The classifier through the real parser: every message of the 2,000-message PKS sink sample,
//! parsed with `parse::parse(frame, Format::Auto)` and classified with `Classifier::classify`,
//! must give exactly the kind, category, namespace, object, container and vm_id of
//! `tests/data/pks-sink-2k.expect.jsonl`.
//!
//! Needs the real parser (`src/parse.rs`); on a branch where the parser is still a stub this
//! test fails (it must still compile). `tests/classify_pks_sample.rs` checks the classifier core
//! on the same data without the parser.

mod common;

use common::octet_frames;
use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use syslog_sink::classify::Classifier;
use syslog_sink::parse::{parse, Format};

const STREAM: &[u8] = include_bytes!("data/pks-sink-2k.octet");
const EXPECT: &str = include_str!("data/pks-sink-2k.expect.jsonl");

fn opt_str(v: &Value, key: &str) -> Option<String> {
    match &v[key] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{key}: unexpected {other}"),
    }
}

#[test]
fn pks_sample_2k_through_parser() {
    let c = Classifier::builtin();
    let frames = octet_frames(STREAM);
    let expects: Vec<Value> = EXPECT
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(frames.len(), 2000);
    assert_eq!(expects.len(), 2000);

    let s = |o: &Option<Cow<'_, str>>| o.as_deref().map(str::to_owned);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (frame, exp)) in frames.iter().zip(&expects).enumerate() {
        let seq = i + 1;
        let msg =
            parse(frame, Format::Auto).unwrap_or_else(|e| panic!("seq {seq}: parse error {e}"));
        assert_eq!(
            msg.app_name.map(str::to_owned),
            opt_str(exp, "app_name"),
            "seq {seq}: APP-NAME"
        );
        let key = match c.classify(&msg) {
            None => {
                assert_eq!(opt_str(exp, "kind"), None, "seq {seq}: not classified");
                "(other sender)".to_owned()
            }
            Some(info) => {
                assert_eq!(
                    Some(info.kind.as_str().to_owned()),
                    opt_str(exp, "kind"),
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
        };
        *counts.entry(key).or_default() += 1;
    }

    println!("pks-sink-2k, parse + classify: {counts:#?}");
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert_eq!(n("(pod log)"), 1224);
    assert_eq!(n("(other sender)"), 55);
    assert_eq!(n("other"), 173);
}
