//! Round trip: any message built from valid RFC 5424 parts, serialized, parses back (under
//! `Format::Rfc5424` and `Format::Auto`) to the same parts.

use proptest::prelude::*;
use syslog_sink::parse::{parse, Format, Message, Protocol};

type Sd = Vec<(String, Vec<(String, String)>)>;

#[derive(Debug, Clone)]
struct Parts {
    pri: u8,
    version: u16,
    timestamp: Option<String>,
    hostname: Option<String>,
    app_name: Option<String>,
    procid: Option<String>,
    msgid: Option<String>,
    sd: Option<Sd>,
    /// (BOM, MSG octets after the BOM).
    msg: Option<(bool, Vec<u8>)>,
}

fn timestamp() -> impl Strategy<Value = String> {
    (
        0u32..=9999,
        1u32..=12,
        1u32..=28,
        0u32..=23,
        0u32..=59,
        0u32..=59,
        prop::option::of((1usize..=6, 0u32..1_000_000)),
        prop::option::of((any::<bool>(), 0u32..=23, 0u32..=59)),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let mut t = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if let Some((n, v)) = frac {
                let digits = format!("{v:06}");
                t.push('.');
                t.push_str(&digits[..n]);
            }
            match off {
                None => t.push('Z'),
                Some((neg, oh, om)) => {
                    t.push_str(&format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' }))
                }
            }
            t
        })
}

/// A header field: NILVALUE or 1..=max PRINTUSASCII (but not the lone `-`).
fn field(max: usize) -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        proptest::string::string_regex(&format!("[!-~]{{1,{max}}}"))
            .expect("regex")
            .prop_filter("not NILVALUE", |s| s != "-"),
    )
}

/// SD-NAME: 1..=32 PRINTUSASCII except `=` SP `]` `"`.
fn sd_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[!#-<>-\\^-~]{1,32}"#).expect("regex")
}

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(r#"[a-z"\\\] =é日]{0,12}"#).expect("regex"),
        any::<String>(),
    ]
}

fn structured_data() -> impl Strategy<Value = Sd> {
    // Unique SD-IDs (a map), any PARAM-NAMEs (they may repeat).
    prop::collection::btree_map(
        sd_name(),
        prop::collection::vec((sd_name(), param_value()), 0..4),
        1..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn msg() -> impl Strategy<Value = Option<(bool, Vec<u8>)>> {
    prop::option::of(prop_oneof![
        any::<String>().prop_map(|s| (true, s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_filter("no BOM", |b| !b.starts_with(b"\xEF\xBB\xBF"))
            .prop_map(|b| (false, b)),
    ])
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        0u8..=191,
        1u16..=999,
        prop::option::of(timestamp()),
        field(255),
        field(48),
        field(128),
        field(32),
        prop::option::of(structured_data()),
        msg(),
    )
        .prop_map(
            |(pri, version, timestamp, hostname, app_name, procid, msgid, sd, msg)| Parts {
                pri,
                version,
                timestamp,
                hostname,
                app_name,
                procid,
                msgid,
                sd,
                msg,
            },
        )
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn serialize(p: &Parts) -> Vec<u8> {
    let nil = |f: &Option<String>| f.clone().unwrap_or_else(|| "-".to_owned());
    let mut s = format!(
        "<{}>{} {} {} {} {} {} ",
        p.pri,
        p.version,
        nil(&p.timestamp),
        nil(&p.hostname),
        nil(&p.app_name),
        nil(&p.procid),
        nil(&p.msgid)
    );
    match &p.sd {
        None => s.push('-'),
        Some(sd) => {
            for (id, params) in sd {
                s.push('[');
                s.push_str(id);
                for (name, value) in params {
                    s.push_str(&format!(" {name}=\"{}\"", escape(value)));
                }
                s.push(']');
            }
        }
    }
    let mut frame = s.into_bytes();
    if let Some((bom, body)) = &p.msg {
        frame.push(b' ');
        if *bom {
            frame.extend_from_slice(b"\xEF\xBB\xBF");
        }
        frame.extend_from_slice(body);
    }
    frame
}

fn check(m: &Message<'_>, p: &Parts) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.protocol, Protocol::Rfc5424);
    prop_assert_eq!(m.pri, p.pri);
    prop_assert_eq!(m.version, Some(p.version));
    prop_assert_eq!(m.timestamp, p.timestamp.as_deref());
    prop_assert_eq!(m.timestamp.is_some(), m.timestamp_parsed().is_some());
    prop_assert_eq!(m.hostname, p.hostname.as_deref());
    prop_assert_eq!(m.app_name, p.app_name.as_deref());
    prop_assert_eq!(m.procid, p.procid.as_deref());
    prop_assert_eq!(m.msgid, p.msgid.as_deref());
    let sd: Option<Sd> = m.structured_data.map(|sd| {
        sd.elements()
            .map(|el| {
                let params = el
                    .params()
                    .map(|(n, v)| {
                        let joined: String = v.chunks().collect();
                        (n.to_owned(), joined)
                    })
                    .collect();
                (el.id.to_owned(), params)
            })
            .collect()
    });
    prop_assert_eq!(&sd, &p.sd);
    if let Some(sd) = m.structured_data {
        for (_, v) in sd.elements().flat_map(|e| e.params()) {
            prop_assert_eq!(v.unescaped(), v.chunks().collect::<String>());
        }
    }
    prop_assert_eq!(m.msg, p.msg.as_ref().map(|(_, b)| b.as_slice()));
    prop_assert_eq!(m.bom, p.msg.as_ref().is_some_and(|(bom, _)| *bom));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn valid_parts_round_trip(p in parts()) {
        let frame = serialize(&p);
        for format in [Format::Rfc5424, Format::Auto] {
            match parse(&frame, format) {
                Ok(m) => check(&m, &p)?,
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "{format:?}: {e}: {:?}",
                        String::from_utf8_lossy(&frame)
                    )))
                }
            }
        }
    }
}
