//! The PKS/TKGI sample (`tests/data/pks-sink-2k.octet`, 2,000 octet-counted messages) parses under
//! `Format::Auto` with the fields `pks-sink-2k.expect.jsonl` lists.

mod common;

use common::octet_frames;
use serde_json::Value;
use syslog_sink::parse::{parse, Format, Protocol};

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

#[test]
fn pks_sample_parses_with_expected_fields() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let data = std::fs::read(format!("{dir}pks-sink-2k.octet")).expect("read sample");
    let expect = std::fs::read_to_string(format!("{dir}pks-sink-2k.expect.jsonl")).expect("read");
    let expect: Vec<Value> = expect
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let frames = octet_frames(&data);
    assert_eq!(frames.len(), 2000);
    assert_eq!(expect.len(), 2000);

    let mut long_names = 0;
    for (n, (frame, e)) in frames.iter().zip(&expect).enumerate() {
        let seq = e["seq"].as_u64().expect("seq");
        assert_eq!(seq, n as u64 + 1);
        let m = parse(frame, Format::Auto)
            .unwrap_or_else(|err| panic!("seq {seq}: {err}: {}", String::from_utf8_lossy(frame)));
        assert_eq!(m.protocol, Protocol::Rfc5424, "seq {seq}");
        assert_eq!(opt(m.app_name), e["app_name"], "seq {seq} app_name");
        assert_eq!(opt(m.hostname), e["hostname"], "seq {seq} hostname");
        // A few frames (kernel messages) carry a NILVALUE TIMESTAMP.
        assert_eq!(
            m.timestamp_parsed().is_some(),
            m.timestamp.is_some(),
            "seq {seq} timestamp"
        );

        let k8s = m
            .structured_data
            .and_then(|sd| sd.element("kubernetes@47450"));
        for (param, key) in [
            ("namespace_name", "namespace"),
            ("object_name", "object"),
            ("container_name", "container"),
            ("vm_id", "vm_id"),
        ] {
            let got = k8s
                .and_then(|el| el.param(param))
                .map(|v| Value::String(v.unescaped().into_owned()))
                .unwrap_or(Value::Null);
            assert_eq!(got, e[key], "seq {seq} {param}");
        }
        if let Some(sd) = m.structured_data {
            long_names += sd
                .elements()
                .flat_map(|el| el.params())
                .filter(|(name, _)| name.len() > 32)
                .count();
        }

        let msg = m.msg.expect("msg");
        let msg = msg
            .strip_suffix(b"\r\n")
            .or_else(|| msg.strip_suffix(b"\n"))
            .unwrap_or(msg);
        let tail = format!(" seq={seq:08}");
        assert!(
            msg.ends_with(tail.as_bytes()),
            "seq {seq}: msg does not end with {tail:?}: {}",
            String::from_utf8_lossy(msg)
        );
    }
    // The sample must exercise the Auto relaxation it is about (label keys over 32 octets).
    assert!(long_names > 0, "no PARAM-NAME over 32 octets in the sample");
    // ...which strict RFC 5424 rejects.
    let strict_rejects = frames
        .iter()
        .filter(|f| parse(f, Format::Rfc5424).is_err())
        .count();
    println!("pks: 2000/2000 parsed under Auto; {strict_rejects} rejected by strict RFC 5424");
    assert!(strict_rejects > 0);
}
