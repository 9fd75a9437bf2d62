//! Unit tests: RFC 3164, PARAM-VALUE unescaping, error reporting and hostile input.

use super::*;

fn ok(frame: &[u8], format: Format) -> Message<'_> {
    match parse(frame, format) {
        Ok(m) => m,
        Err(e) => panic!("{e}: {}", String::from_utf8_lossy(frame)),
    }
}

fn err(frame: &[u8], format: Format) -> ParseError {
    match parse(frame, format) {
        Ok(m) => panic!("accepted {:?}: {m:?}", String::from_utf8_lossy(frame)),
        Err(e) => e,
    }
}

// ---- RFC 3164 ------------------------------------------------------------------------------

#[test]
fn rfc3164_logger_style() {
    for format in [Format::Rfc3164, Format::Auto] {
        let m = ok(b"<13>Nov 26 10:00:00 host tag[123]: text here", format);
        assert_eq!(m.protocol, Protocol::Rfc3164);
        assert_eq!((m.pri, m.facility(), m.severity()), (13, 1, 5));
        assert_eq!(m.version, None);
        assert_eq!(m.timestamp, Some("Nov 26 10:00:00"));
        assert_eq!(m.hostname, Some("host"));
        assert_eq!(m.app_name, Some("tag"));
        assert_eq!(m.procid, Some("123"));
        assert_eq!(m.msgid, None);
        assert!(m.structured_data.is_none());
        assert_eq!(m.msg, Some(&b"text here"[..]));
        assert!(!m.bom);
        // No year, no offset.
        assert_eq!(m.timestamp_parsed(), None);
    }
}

#[test]
fn rfc3164_without_pid_host_or_tag() {
    let m = ok(b"<13>Nov 26 10:00:00 host sshd: hello", Format::Rfc3164);
    assert_eq!(
        (m.hostname, m.app_name, m.procid),
        (Some("host"), Some("sshd"), None)
    );
    assert_eq!(m.msg, Some(&b"hello"[..]));

    // No HOSTNAME: the first word is a TAG.
    let m = ok(b"<13>Nov 26 10:00:00 tag[7]: text", Format::Rfc3164);
    assert_eq!(
        (m.hostname, m.app_name, m.procid),
        (None, Some("tag"), Some("7"))
    );
    assert_eq!(m.msg, Some(&b"text"[..]));
    let m = ok(b"<13>Nov 26 10:00:00 user: text", Format::Rfc3164);
    assert_eq!((m.hostname, m.app_name), (None, Some("user")));

    // No TAG: HOSTNAME, then MSG.
    let m = ok(b"<13>Nov 26 10:00:00 host just text", Format::Rfc3164);
    assert_eq!((m.hostname, m.app_name), (Some("host"), None));
    assert_eq!(m.msg, Some(&b"just text"[..]));

    // Space-padded and one-digit days.
    let m = ok(b"<13>Nov  6 10:00:00 host tag: x", Format::Rfc3164);
    assert_eq!(m.timestamp, Some("Nov  6 10:00:00"));
    let m = ok(b"<13>Nov 6 10:00:00 host tag: x", Format::Rfc3164);
    assert_eq!(m.timestamp, Some("Nov 6 10:00:00"));

    // The haproxy example of the corpus (no HOSTNAME), via Auto's fallback.
    let m = ok(
        b"<134>Feb 18 20:53:31 haproxy[376]: I am a message",
        Format::Auto,
    );
    assert_eq!(m.protocol, Protocol::Rfc3164);
    assert_eq!((m.app_name, m.procid), (Some("haproxy"), Some("376")));
    assert_eq!(m.msg, Some(&b"I am a message"[..]));

    // Ends right after the timestamp / the TAG.
    let m = ok(b"<13>Nov 26 10:00:00", Format::Rfc3164);
    assert_eq!(m.msg, None);
    let m = ok(b"<13>Nov 26 10:00:00 host tag:", Format::Rfc3164);
    assert_eq!((m.app_name, m.msg), (Some("tag"), Some(&b""[..])));

    // BOM and trailing LF in MSG.
    let m = ok(
        b"<13>Nov 26 10:00:00 host tag: \xEF\xBB\xBFhi\n",
        Format::Rfc3164,
    );
    assert!(m.bom);
    assert_eq!(m.msg, Some(&b"hi\n"[..]));
}

#[test]
fn rfc3164_with_rfc3339_timestamp() {
    let frame = b"<30>2024-03-11T08:00:00.123456789+01:00 node-1 kubelet[99]: started";
    for format in [Format::Rfc3164, Format::Auto] {
        let m = ok(frame, format);
        assert_eq!(m.protocol, Protocol::Rfc3164);
        assert_eq!(m.timestamp, Some("2024-03-11T08:00:00.123456789+01:00"));
        assert_eq!(
            (m.hostname, m.app_name, m.procid),
            (Some("node-1"), Some("kubelet"), Some("99"))
        );
        assert_eq!(m.msg, Some(&b"started"[..]));
        let ts = m.timestamp_parsed().expect("RFC 3339 timestamp");
        assert_eq!(ts.to_rfc3339(), "2024-03-11T08:00:00.123456789+01:00");
    }
}

#[test]
fn rfc3164_garbage() {
    let e = err(b"<13>garbage here", Format::Rfc3164);
    assert_eq!(e.offset, 4);
    assert!(e.reason.contains("TIMESTAMP"), "{e}");
    // Out of range.
    err(b"<13>Nov 26 25:00:00 host tag: x", Format::Rfc3164);
    err(b"<13>Nov 32 10:00:00 host tag: x", Format::Rfc3164);
    err(b"<13>Foo 26 10:00:00 host tag: x", Format::Rfc3164);
    err(b"<13>Nov 26 10:00:00:host", Format::Rfc3164);
    // No PRI.
    let e = err(b"Nov 26 10:00:00 host tag: x", Format::Rfc3164);
    assert_eq!((e.offset, e.reason), (0, "PRI missing"));
    // RFC 5424 is not RFC 3164.
    err(b"<13>1 - - - - - -", Format::Rfc3164);
    // Auto: the 3164 error for a frame that does not start like RFC 5424...
    let e = err(b"<13>garbage here", Format::Auto);
    assert_eq!(e.offset, 4);
    assert!(e.reason.contains("TIMESTAMP"), "{e}");
    // ...and the RFC 5424 one for a frame that does.
    let e = err(
        b"<13>1 2003-10-11T22:14:15.003 host app - - - msg",
        Format::Auto,
    );
    assert_eq!((e.offset, e.reason), (29, "TIME-OFFSET missing"));
}

// ---- PARAM-VALUE ---------------------------------------------------------------------------

fn value(raw: &str) -> ParamValue<'_> {
    ParamValue { raw, plain: false }
}

fn chunks(raw: &str) -> Vec<&str> {
    value(raw).chunks().collect()
}

#[test]
fn chunks_resolve_the_three_escapes_only() {
    assert_eq!(chunks(""), Vec::<&str>::new());
    assert_eq!(chunks("plain"), ["plain"]);
    assert_eq!(chunks(r#"a\"b"#), ["a", "\"b"]);
    assert_eq!(chunks(r"a\\b"), ["a", "\\b"]);
    assert_eq!(chunks(r"a\]b"), ["a", "]b"]);
    assert_eq!(chunks(r#"\"\\\]"#), ["\"", "\\", "]"]);
    assert_eq!(chunks(r"end\\"), ["end", "\\"]);
    assert_eq!(chunks(r#"\"start"#), ["\"start"]);
    // Other backslashes stay, with their character.
    assert_eq!(chunks(r"C:\Temp\new"), [r"C:\Temp\new"]);
    assert_eq!(chunks(r"\n"), [r"\n"]);
    assert_eq!(chunks(r"x\"), [r"x\"]);
    assert_eq!(chunks("\\é\\\"ü"), ["\\é", "\"ü"]);
}

#[test]
fn unescaped_borrows_without_escape() {
    assert!(matches!(value("plain").unescaped(), Cow::Borrowed("plain")));
    assert!(matches!(
        value(r"C:\Temp").unescaped(),
        Cow::Borrowed(r"C:\Temp")
    ));
    assert!(matches!(value(r#"\"x"#).unescaped(), Cow::Borrowed("\"x")));
    assert!(matches!(value("").unescaped(), Cow::Borrowed("")));
    let v = value(r#"a\"b\\c\]d\e"#);
    assert!(matches!(v.unescaped(), Cow::Owned(_)));
    assert_eq!(v.unescaped(), r#"a"b\c]d\e"#);
    assert_eq!(v.to_string(), r#"a"b\c]d\e"#);
    assert_eq!(v.raw(), r#"a\"b\\c\]d\e"#);
}

#[test]
fn structured_data_walk() {
    let frame = br#"<13>1 - h a - - [a@1 x="1" x="2" y="q\]z"][b@2][c@3 k="v"] msg"#;
    let m = ok(frame, Format::Rfc5424);
    let sd = m.structured_data.expect("sd");
    assert_eq!(sd.raw(), r#"[a@1 x="1" x="2" y="q\]z"][b@2][c@3 k="v"]"#);
    let ids: Vec<&str> = sd.elements().map(|e| e.id).collect();
    assert_eq!(ids, ["a@1", "b@2", "c@3"]);
    let a = sd.element("a@1").expect("a@1");
    let params: Vec<(&str, String)> = a
        .params()
        .map(|(n, v)| (n, v.unescaped().into_owned()))
        .collect();
    assert_eq!(
        params,
        [("x", "1".into()), ("x", "2".into()), ("y", "q]z".into())]
    );
    assert_eq!(a.param("x").map(|v| v.raw()), Some("1"));
    assert_eq!(sd.element("b@2").map(|e| e.params().count()), Some(0));
    assert!(sd.element("nope").is_none());
    assert_eq!(m.msg, Some(&b"msg"[..]));
}

#[test]
fn auto_relaxations() {
    // PKS label keys: long PARAM-NAMEs with `/` and `.`.
    let frame = br#"<14>1 2024-03-11T08:00:00.123456789+00:00 h pod.log/ns/x - - [kubernetes@47450 service.istio.io/canonical-revision="v1" app.kubernetes.io/managed-by="Helm"] hi"#;
    err(frame, Format::Rfc5424);
    let m = ok(frame, Format::Auto);
    let el = m
        .structured_data
        .and_then(|sd| sd.element("kubernetes@47450"))
        .expect("element");
    assert_eq!(
        el.param("service.istio.io/canonical-revision")
            .map(|v| v.raw()),
        Some("v1")
    );
    let ts = m.timestamp_parsed().expect("9 fraction digits");
    assert_eq!(ts.timestamp_subsec_nanos(), 123_456_789);

    // Duplicate SD-ID: both kept.
    let frame = br#"<13>1 - h a - - [x a="1"][x a="2"]"#;
    assert_eq!(err(frame, Format::Rfc5424).reason, "duplicate SD-ID");
    let m = ok(frame, Format::Auto);
    assert_eq!(m.structured_data.map(|sd| sd.elements().count()), Some(2));

    // Unescaped `]` inside a value.
    let frame = br#"<13>1 - h a - - [x a="]q"] m"#;
    let m = ok(frame, Format::Auto);
    let v = m.structured_data.and_then(|sd| sd.element("x")?.param("a"));
    assert_eq!(v.map(|v| v.raw()), Some("]q"));

    // PRIVAL with a leading zero; BOM + invalid UTF-8.
    assert_eq!(ok(b"<013>1 - - - - - -", Format::Auto).pri, 13);
    let m = ok(b"<13>1 - - - - - - \xEF\xBB\xBF\xC0\xAF", Format::Auto);
    assert!(m.bom);
    assert_eq!(m.msg, Some(&b"\xC0\xAF"[..]));

    // Not relaxed: a version 0, a missing offset.
    err(b"<13>0 - - - - - -", Format::Auto);
    err(b"<13>1 2003-10-11T22:14:15 - - - - -", Format::Auto);
}

#[test]
fn timestamp_parsed_values() {
    let m = ok(
        b"<13>1 2003-08-24T05:14:15.000003-07:00 - - - - -",
        Format::Rfc5424,
    );
    let ts = m.timestamp_parsed().expect("ts");
    assert_eq!(ts.to_rfc3339(), "2003-08-24T05:14:15.000003-07:00");
    assert_eq!(ts.timestamp(), 1_061_727_255);
    let m = ok(b"<13>1 1985-04-12T23:20:50.52Z - - - - -", Format::Rfc5424);
    assert_eq!(
        m.timestamp_parsed().map(|t| t.timestamp_subsec_nanos()),
        Some(520_000_000)
    );
    assert_eq!(
        ok(b"<13>1 - - - - - -", Format::Rfc5424).timestamp_parsed(),
        None
    );
}

// ---- errors and hostile input --------------------------------------------------------------

#[test]
fn errors_have_reason_and_offset() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"", 0, "PRI missing"),
        (b"<", 1, "PRIVAL not 1-3 digits"),
        (b"<999>1 - - - - - -", 1, "PRI > 191"),
        (b"<13", 3, "PRI malformed"),
        (b"<1234>", 4, "PRI malformed"),
        (b"<13>", 4, "VERSION missing or invalid"),
        (b"<13>1", 5, "TIMESTAMP missing (message truncated)"),
        (
            b"<13>1 - h\0st a - - -",
            9,
            "HOSTNAME contains non-PRINTUSASCII octet",
        ),
        (
            b"<13>1 - host app - - [id a=\"1\" x",
            32,
            "SD-PARAM: \"=\" expected after PARAM-NAME",
        ),
        (
            b"<13>1 - host app - - [id v=\"abc",
            31,
            "PARAM-VALUE unterminated",
        ),
        (
            b"<13>1 - h a - - [id v=x\"]",
            22,
            "SD-PARAM: opening quote expected after \"=\"",
        ),
        (
            b"<13>1 - h a - - [id v=",
            22,
            "SD-PARAM: opening quote expected after \"=\"",
        ),
        (
            b"<13>1 - h a - - [id v\"",
            21,
            "SD-PARAM: \"=\" expected after PARAM-NAME",
        ),
        (
            b"<13>1 - h a - - [id v=\"a\\",
            25,
            "PARAM-VALUE unterminated",
        ),
        (
            b"<13>1 - h a - - [id v=\"a\\\"b]\"",
            27,
            "unescaped ] in PARAM-VALUE",
        ),
        (
            b"<13>1 - h a - - [id a=\"1\"]msg",
            26,
            "SP expected after STRUCTURED-DATA",
        ),
        (b"<13>1 - h a - - [", 17, "SD-ID missing or invalid"),
        (
            b"<13>1 - h a - - - \xEF\xBB\xBF\xFF",
            21,
            "MSG starts with BOM but is not valid UTF-8",
        ),
        (
            b"<13>1 - h a - - [i a=\"\xFF\"]",
            22,
            "PARAM-VALUE not valid UTF-8",
        ),
        (
            b"<13>1 2003-02-29T00:00:00Z - - - - -",
            14,
            "timestamp: invalid date (day out of range)",
        ),
        (
            b"<13>1 2003-02-28T23:59:60Z - - - - -",
            23,
            "timestamp: leap second not allowed",
        ),
    ];
    for &(frame, offset, reason) in cases {
        let e = err(frame, Format::Rfc5424);
        assert_eq!(
            (e.offset, e.reason),
            (offset, reason),
            "{:?}",
            String::from_utf8_lossy(frame)
        );
    }
    let e = err(b"<999>", Format::Rfc5424);
    assert_eq!(e.to_string(), "PRI > 191 at byte 1");
}

/// Every format, every prefix of `frame`: no panic, and errors point inside the frame.
fn never_panics(frame: &[u8]) {
    for format in [Format::Auto, Format::Rfc5424, Format::Rfc3164] {
        for end in 0..=frame.len() {
            let f = &frame[..end];
            match parse(f, format) {
                Ok(m) => {
                    if let Some(sd) = m.structured_data {
                        for el in sd.elements() {
                            for (_, v) in el.params() {
                                let _ = v.unescaped();
                            }
                        }
                    }
                    let _ = m.timestamp_parsed();
                }
                Err(e) => {
                    assert!(e.offset <= f.len(), "{e} for {} bytes", f.len());
                    assert!(!e.reason.is_empty());
                }
            }
        }
    }
}

#[test]
fn hostile_input_never_panics() {
    never_panics(br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application\]\"\\" eventID="1011"][examplePriority@32473 class="high"] \xEF\xBB\xBFAn application event"#);
    never_panics(b"<13>Nov 26 10:00:00 host tag[123]: text");
    never_panics(b"<13>2024-03-11T08:00:00.1+01:00 host tag[]: text");
    never_panics(b"<13>1 - - - - - [a b=\"\\\"]");
    never_panics(b"<\0>\0 \0 \0 \0 \0 \0 \0");
    never_panics(b"<13>1 \0\0\0\0\0\0");
    never_panics(&[0u8; 64]);
    never_panics(&[0xFFu8; 64]);

    for format in [Format::Auto, Format::Rfc5424, Format::Rfc3164] {
        let e = err(b"", format);
        assert_eq!((e.offset, e.reason), (0, "PRI missing"));
        let e = err(b"<", format);
        assert_eq!(e.offset, 1);
        let e = err(b"<999>", format);
        assert_eq!((e.offset, e.reason), (1, "PRI > 191"));
        let e = err(b"\0<13>1 - - - - - -", format);
        assert_eq!((e.offset, e.reason), (0, "PRI missing"));

        // 100 KiB of `[` in several places.
        let brackets = vec![b'['; 100 * 1024];
        let e = err(&brackets, format);
        assert_eq!(e.offset, 0);
        let mut frame = b"<13>1 - - - - - ".to_vec();
        frame.extend_from_slice(&brackets);
        let e = err(&frame, format);
        // `[` is PRINTUSASCII, so it is an (over-long) SD-ID.
        match format {
            Format::Rfc5424 => {
                assert_eq!((e.offset, e.reason), (49, "SD-NAME too long (SD-ID > 32)"))
            }
            Format::Auto => assert_eq!(
                (e.offset, e.reason),
                (
                    frame.len(),
                    "SD-ELEMENT: expected SP or \"]\" after SD-ID/SD-PARAM"
                )
            ),
            Format::Rfc3164 => assert_eq!(e.offset, 4),
        }
        let mut frame = b"<13>1 - - - - - [id a=\"".to_vec();
        frame.extend_from_slice(&brackets);
        let e = err(&frame, format);
        assert!(e.offset <= frame.len());
        // Many valid elements: Auto takes them, strict checks SD-ID uniqueness.
        let mut frame = b"<13>1 - - - - - ".to_vec();
        for n in 0..2000 {
            frame.extend_from_slice(format!("[e{n}]").as_bytes());
        }
        match parse(&frame, format) {
            Ok(m) => {
                assert_ne!(format, Format::Rfc3164);
                assert_eq!(
                    m.structured_data.map(|sd| sd.elements().count()),
                    Some(2000)
                );
            }
            Err(e) => assert_eq!(format, Format::Rfc3164, "{e}"),
        }
    }

    // Unterminated SD.
    let e = err(br#"<13>1 - h a - - [id a="1""#, Format::Rfc5424);
    assert_eq!(
        (e.offset, e.reason),
        (25, "SD-ELEMENT: expected SP or \"]\" after SD-ID/SD-PARAM")
    );
    let e = err(br#"<13>1 - h a - - [id"#, Format::Auto);
    assert_eq!(e.offset, 19);
    // NUL bytes.
    let e = err(b"<13>1 - h\0 a - - -", Format::Auto);
    assert_eq!(
        (e.offset, e.reason),
        (9, "HOSTNAME contains non-PRINTUSASCII octet")
    );
    let m = ok(b"<13>1 - h a - - - \0\0", Format::Rfc5424);
    assert_eq!(m.msg, Some(&b"\0\0"[..]));
}

#[test]
fn find_any_matches_naive_scan() {
    let hay: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) | 0x80).collect();
    for needles in [&b" "[..], b"\"\\", b"\"\\]", b" ]"] {
        for at in 0..hay.len() {
            for second in [None, Some(at + 1), Some(at + 9)] {
                let mut h = hay.clone();
                h[at] = needles[needles.len() - 1];
                if let Some(s) = second.filter(|&s| s < h.len()) {
                    h[s] = needles[0];
                }
                for end in [at, at + 1, h.len()] {
                    let t = &h[..end.min(h.len())];
                    let naive = t.iter().position(|c| needles.contains(c));
                    assert_eq!(find_any(t, needles), naive, "{needles:?} at {at} end {end}");
                }
            }
        }
    }
    assert_eq!(printusascii_run(b"abc def"), 3);
    assert_eq!(printusascii_run(b"ab\0c def"), 2);
    assert_eq!(printusascii_run(b"abcdefghijk\x7flmnop"), 11);
    assert_eq!(printusascii_run(b""), 0);
}

#[test]
fn sd_name_and_printusascii_runs_match_the_octet_rules() {
    let reference = |h: &[u8]| {
        h.iter()
            .position(|&c| !(33..=126).contains(&c) || matches!(c, b'=' | b']' | b'"'))
            .unwrap_or(h.len())
    };
    // Every octet at every position of a 19-octet name (two words and a tail), with a stop
    // octet after it so that a later hit cannot hide a missed one.
    for c in 0..=255u8 {
        for pos in 0..19 {
            let mut h = vec![b'a'; 19];
            h[pos] = c;
            if pos + 1 < 19 {
                h[pos + 1] = 0xff;
            }
            assert_eq!(sd_name_run(&h), reference(&h), "octet {c} at {pos}");
            let print = h.iter().position(|c| !(33..=126).contains(c)).unwrap_or(19);
            assert_eq!(printusascii_run(&h), print, "octet {c} at {pos}");
        }
    }
    assert_eq!(sd_name_run(b""), 0);
    assert_eq!(
        sd_name_run(b"service.istio.io/canonical-revision=\"1\""),
        35
    );
}

#[test]
fn timestamp_dates_agree_with_chrono() {
    // Every day 00..=32 of every month of years around the leap-year rules.
    for year in [0, 1, 4, 100, 1900, 1999, 2000, 2023, 2024, 2100, 2400, 9999] {
        for month in 1..=12 {
            for day in 0..=32 {
                let ts = format!("{year:04}-{month:02}-{day:02}T00:00:00Z");
                let ours = rfc5424::timestamp(ts.as_bytes(), 9).is_ok();
                let chrono = chrono::NaiveDate::from_ymd_opt(year, month, day).is_some();
                assert_eq!(ours, chrono, "{ts}");
            }
        }
    }
}

/// Every element and param of `sd` as owned strings.
fn walk_sd(sd: &StructuredData<'_>) -> Vec<(String, Vec<(String, String)>)> {
    sd.elements()
        .map(|el| {
            let params = el
                .params()
                .map(|(n, v)| (n.to_owned(), format!("{}|{v}", v.raw())))
                .collect();
            (el.id.to_owned(), params)
        })
        .collect()
}

#[test]
fn walking_with_the_parsers_spans_equals_scanning() {
    let mut frames: Vec<Vec<u8>> = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.lf"
    ))
    .expect("read sample")
    .split(|&b| b == b'\n')
    .filter(|l| !l.is_empty())
    .map(<[u8]>::to_vec)
    .collect();
    let many_params: String = (0..20).map(|k| format!(" p{k}=\"v{k}\"")).collect();
    let many_elements: String = (0..6).map(|k| format!("[e{k} a=\"{k}\"]")).collect();
    for sd in [
        r#"[a]"#.to_owned(),
        r#"[a][b]"#.to_owned(),
        r#"[a x="1" y="" z="a\"b\\c\]d]e"][b w="]"][a x="2"]"#.to_owned(),
        format!("[big{many_params}]"),
        format!("[m x=\"1\"]{many_elements}"),
        format!("[long v=\"{}\"]", "x".repeat(70_000)),
    ] {
        frames.push(format!("<14>1 - h a - - {sd} msg").into_bytes());
        frames.push(format!("<14>1 - h a - - {sd}").into_bytes());
    }
    let mut with_spans = 0;
    for frame in &frames {
        let m = parse(frame, Format::Auto).expect("parses");
        let Some(sd) = m.structured_data else {
            continue;
        };
        with_spans += usize::from(sd.spans.is_some());
        let scanned = StructuredData::new(sd.raw(), None);
        assert_eq!(walk_sd(&sd), walk_sd(&scanned), "{}", sd.raw());
    }
    assert!(with_spans > 1900, "spans kept for {with_spans} SDs");
}

#[test]
fn non_ascii_param_values_are_checked_for_utf8() {
    // Valid UTF-8, also right after a backslash.
    for sd in ["[id v=\"é\"]", "[id v=\"\\é\"]", "[id v=\"aé\\\"b\"]"] {
        let frame = format!("<13>1 - h a - - {sd} msg");
        let m = ok(frame.as_bytes(), Format::Auto);
        assert_eq!(m.structured_data.map(|sd| sd.raw()), Some(sd));
    }
    // Not UTF-8: anywhere in the value, also as the octet a backslash escapes (which the
    // value scan skips).
    for sd in [
        &b"[id v=\"\xff\"]"[..],
        b"[id v=\"a\\\xff\"]",
        b"[id v=\"\\\xc3\"]",
        b"[id v=\"\xc3\xa9\xff\"]",
        b"[id a=\"x\" v=\"\\\xff\"]",
    ] {
        let mut frame = b"<13>1 - h a - - ".to_vec();
        frame.extend_from_slice(sd);
        for format in [Format::Rfc5424, Format::Auto] {
            let e = err(&frame, format);
            assert_eq!(e.reason, "PARAM-VALUE not valid UTF-8", "{format:?}");
        }
    }
}

#[test]
fn timestamp_parsed_follows_a_changed_timestamp_field() {
    let mut m = ok(b"<13>1 2003-08-24T05:14:15Z - - - - -", Format::Rfc5424);
    assert_eq!(
        m.timestamp_parsed().map(|t| t.timestamp()),
        Some(1_061_702_055)
    );
    m.timestamp = Some("1985-04-12T23:20:50.52Z");
    assert_eq!(
        m.timestamp_parsed().map(|t| t.timestamp()),
        Some(482_196_050)
    );
    m.timestamp = Some("garbage");
    assert_eq!(m.timestamp_parsed(), None);
    m.timestamp = None;
    assert_eq!(m.timestamp_parsed(), None);
}

#[test]
fn fast_timestamp_path_accepts_only_what_the_general_path_accepts() {
    let bases = [
        "2024-03-11T08:00:00.0301+00:00",
        "2024-02-29T23:59:59Z",
        "2023-02-28T00:00:00.123456789-23:59",
        "1985-04-12T23:20:50.52Z",
        "2003-08-24T05:14:15.000003-07:00",
    ];
    let alphabet = b"0123456789-:T.Z+,zt x";
    let (mut fast, mut total) = (0, 0);
    for base in bases {
        let b = base.as_bytes();
        let mut variants = vec![b.to_vec()];
        for pos in 0..b.len() {
            for &c in alphabet {
                let mut v = b.to_vec();
                v[pos] = c;
                variants.push(v);
            }
            variants.push([&b[..pos], &b[pos + 1..]].concat());
            variants.push([&b[..pos], b"1", &b[pos..]].concat());
        }
        for v in variants {
            for max_frac in [6, 9] {
                total += 1;
                let general = rfc5424::timestamp_general(&v, max_frac).ok();
                let whole = rfc5424::timestamp(&v, max_frac).ok();
                assert_eq!(whole, general, "{}", String::from_utf8_lossy(&v));
                if let Some((ts, n)) = rfc5424::timestamp_fast(&v, max_frac) {
                    fast += 1;
                    assert_eq!(
                        rfc5424::timestamp_general(&v[..n], max_frac).ok(),
                        Some(ts),
                        "{}",
                        String::from_utf8_lossy(&v)
                    );
                }
            }
        }
    }
    assert!(
        fast > 100 && fast < total,
        "fast path took {fast} of {total}"
    );
}

#[test]
fn timestamp_parsed_agrees_with_chrono_local_time_minus_offset() {
    use chrono::{NaiveDate, TimeZone};
    let mut n = 0;
    for year in [
        0, 1, 4, 100, 1600, 1900, 1969, 1970, 1999, 2000, 2024, 2100, 9999,
    ] {
        for (month, day) in [(1, 1), (2, 28), (2, 29), (3, 1), (6, 15), (12, 31)] {
            for (time, off) in [
                ("00:00:00", "+23:59"),
                ("00:00:00.5", "Z"),
                ("12:34:56.123456789", "-07:30"),
                ("23:59:59.000001", "-23:59"),
            ] {
                let text = format!("{year:04}-{month:02}-{day:02}T{time}{off}");
                let frame = format!("<13>1 {text} - - - - -");
                let Ok(m) = parse(frame.as_bytes(), Format::Auto) else {
                    // 29 February of a common year.
                    assert!(
                        NaiveDate::from_ymd_opt(year, month, day).is_none(),
                        "{text}"
                    );
                    continue;
                };
                let ts = rfc5424::timestamp(text.as_bytes(), 9).expect("valid");
                let naive = NaiveDate::from_ymd_opt(year, month, day)
                    .and_then(|d| {
                        d.and_hms_nano_opt(
                            ts.hour.into(),
                            ts.minute.into(),
                            ts.second.into(),
                            ts.nanos,
                        )
                    })
                    .expect("date");
                let want = chrono::FixedOffset::east_opt(ts.offset_secs)
                    .and_then(|o| o.from_local_datetime(&naive).single());
                assert_eq!(m.timestamp_parsed(), want, "{text}");
                assert_eq!(
                    m.timestamp_parsed().map(|t| t.offset().local_minus_utc()),
                    Some(ts.offset_secs)
                );
                n += 1;
            }
        }
    }
    assert!(n > 250, "{n}");
}

#[test]
fn swar_fraction_digits_match_a_plain_reading() {
    for n in 1..=8 {
        for digits in ["12345678", "00000001", "99999999", "90000000", "07060504"] {
            let mut w = *b"xxxxxxxx";
            w[..n].copy_from_slice(&digits.as_bytes()[..n]);
            let want: u32 = digits[..n].parse().expect("digits");
            assert_eq!(
                rfc5424::parse_digits(u64::from_le_bytes(w), n),
                want,
                "{digits} {n}"
            );
        }
    }
}
