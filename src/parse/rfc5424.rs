//! RFC 5424 §6: the header, TIMESTAMP, STRUCTURED-DATA and MSG, strict or with the
//! [`Format::Auto`](super::Format::Auto) relaxations ([`Rules`]).

use nom::Parser;

use super::{
    element_ids, find_any, printusascii_run, sd_name_run, SpanRecorder, Spans, StructuredData,
};
use super::{
    err, fail, pri, skip, strip_bom, to_error, Message, PErr, PResult, ParseError, Protocol,
};

/// What the parser tolerates beyond the ABNF; [`Rules::STRICT`] tolerates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// PRIVAL may have leading zeros.
    pub pri_leading_zero: bool,
    /// Most TIME-SECFRAC digits.
    pub max_frac: usize,
    /// HOSTNAME/APP-NAME/PROCID/MSGID must respect 255/48/128/32.
    pub header_limits: bool,
    /// Most octets in an SD-NAME.
    pub sd_name_max: usize,
    /// An SD-ID must not repeat.
    pub unique_sd_ids: bool,
    /// An unescaped `]` is allowed inside a PARAM-VALUE.
    pub unescaped_bracket: bool,
    /// MSG that starts with a BOM must be UTF-8.
    pub bom_utf8: bool,
}

impl Rules {
    /// RFC 5424 exactly.
    pub const STRICT: Rules = Rules {
        pri_leading_zero: false,
        max_frac: 6,
        header_limits: true,
        sd_name_max: 32,
        unique_sd_ids: true,
        unescaped_bracket: false,
        bom_utf8: true,
    };

    /// What [`Format::Auto`](super::Format::Auto) accepts (documented in the module doc).
    pub const AUTO: Rules = Rules {
        pri_leading_zero: true,
        max_frac: 9,
        header_limits: false,
        sd_name_max: usize::MAX,
        unique_sd_ids: false,
        unescaped_bracket: true,
        bom_utf8: false,
    };
}

/// Whether `frame` starts like RFC 5424: `<PRI>` followed by a digit (a VERSION).
pub(crate) fn starts_like(frame: &[u8]) -> bool {
    matches!(pri(frame, true), Ok((rest, _)) if rest.first().is_some_and(u8::is_ascii_digit))
}

/// Parses `frame` as RFC 5424 under `rules`.
pub(crate) fn parse<'a>(frame: &'a [u8], rules: &Rules) -> Result<Message<'a>, ParseError> {
    message(frame, rules).map_err(|e| to_error(frame, e))
}

/// A header field's limit and error reasons.
struct Field {
    max: usize,
    missing: &'static str,
    empty: &'static str,
    non_print: &'static str,
    too_long: &'static str,
    truncated: &'static str,
}

const HOSTNAME: Field = Field {
    max: 255,
    missing: "HOSTNAME missing (message truncated)",
    empty: "HOSTNAME empty (two SP)",
    non_print: "HOSTNAME contains non-PRINTUSASCII octet",
    too_long: "HOSTNAME too long (> 255)",
    truncated: "message truncated after HOSTNAME",
};
const APP_NAME: Field = Field {
    max: 48,
    missing: "APP-NAME missing (message truncated)",
    empty: "APP-NAME empty (two SP)",
    non_print: "APP-NAME contains non-PRINTUSASCII octet",
    too_long: "APP-NAME too long (> 48)",
    truncated: "message truncated after APP-NAME",
};
const PROCID: Field = Field {
    max: 128,
    missing: "PROCID missing (message truncated)",
    empty: "PROCID empty (two SP)",
    non_print: "PROCID contains non-PRINTUSASCII octet",
    too_long: "PROCID too long (> 128)",
    truncated: "message truncated after PROCID",
};
const MSGID: Field = Field {
    max: 32,
    missing: "MSGID missing (message truncated)",
    empty: "MSGID empty (two SP)",
    non_print: "MSGID contains non-PRINTUSASCII octet",
    too_long: "MSGID too long (> 32)",
    truncated: "message truncated after MSGID (STRUCTURED-DATA missing)",
};

fn message<'a>(input: &'a [u8], r: &Rules) -> Result<Message<'a>, nom::Err<PErr<'a>>> {
    let (i, pri) = pri(input, r.pri_leading_zero)?;
    let (i, version) = version(i)?;
    let (i, timestamp) = timestamp_field(i, r.max_frac)?;
    let (i, hostname) = header_field(i, &HOSTNAME, r.header_limits)?;
    let (i, app_name) = header_field(i, &APP_NAME, r.header_limits)?;
    let (i, procid) = header_field(i, &PROCID, r.header_limits)?;
    let (i, msgid) = header_field(i, &MSGID, r.header_limits)?;
    let (i, sd) = structured_data(i, r)?;
    // Everything up to the end of STRUCTURED-DATA is checked for UTF-8 in one go: PRI, VERSION,
    // TIMESTAMP and the header fields are ASCII (checked above), so only a PARAM-VALUE can fail.
    let head = match std::str::from_utf8(&input[..input.len() - i.len()]) {
        Ok(head) => head,
        Err(e) => {
            let at = skip(input, e.valid_up_to());
            return Err(err(at, "PARAM-VALUE not valid UTF-8"));
        }
    };
    // The `&str` of a part of `head` (a sub-slice of `input`; ASCII-bounded, so `get` succeeds).
    let text = |part: &'a [u8]| {
        let at = part.as_ptr() as usize - input.as_ptr() as usize;
        head.get(at..at + part.len()).unwrap_or_default()
    };
    let timestamp = timestamp.map(text);
    let (hostname, app_name) = (hostname.map(text), app_name.map(text));
    let (procid, msgid) = (procid.map(text), msgid.map(text));
    let structured_data = sd.map(|(raw, spans)| StructuredData::new(text(raw), spans));
    // `structured_data` leaves either nothing or SP MSG.
    let (msg, bom) = match i.split_first() {
        None => (None, false),
        Some((_, m)) => {
            let (m, bom) = strip_bom(m);
            if bom && r.bom_utf8 {
                if let Err(e) = std::str::from_utf8(m) {
                    let at = skip(m, e.valid_up_to());
                    return Err(err(at, "MSG starts with BOM but is not valid UTF-8"));
                }
            }
            (Some(m), bom)
        }
    };
    Ok(Message {
        protocol: Protocol::Rfc5424,
        pri,
        version: Some(version),
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
        bom,
    })
}

/// One SP after a token, or the given error at end of input / another octet.
fn sp<'a>(i: &'a [u8], at_end: &'static str, not_sp: &'static str) -> PResult<'a, ()> {
    match i.split_first() {
        Some((b' ', rest)) => Ok((rest, ())),
        Some(_) => fail(i, not_sp),
        None => fail(i, at_end),
    }
}

/// VERSION SP: `NONZERO-DIGIT 0*2DIGIT`.
fn version(i: &[u8]) -> PResult<'_, u16> {
    let (rest, digits) = nom::bytes::complete::take_while(|c: u8| c.is_ascii_digit()).parse(i)?;
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return fail(i, "VERSION missing or invalid");
    }
    if digits.len() > 3 {
        return fail(skip(i, 3), "VERSION more than 3 digits");
    }
    let v = digits
        .iter()
        .fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
    let (rest, ()) = sp(
        rest,
        "TIMESTAMP missing (message truncated)",
        "expected SP before TIMESTAMP",
    )?;
    Ok((rest, v))
}

/// TIMESTAMP SP: NILVALUE or a checked RFC 3339 date-time.
fn timestamp_field(i: &[u8], max_frac: usize) -> PResult<'_, Option<&[u8]>> {
    let len = find_any(i, b" ").unwrap_or(i.len());
    let (tok, rest) = i.split_at(len);
    if tok.is_empty() {
        return if i.is_empty() {
            fail(i, "TIMESTAMP missing (message truncated)")
        } else {
            fail(i, "empty TIMESTAMP (two SP)")
        };
    }
    let ts = if tok == b"-" {
        None
    } else {
        if let Err((at, reason)) = timestamp(tok, max_frac) {
            return fail(skip(i, at), reason);
        }
        // ASCII (checked by `timestamp`); made a `&str` with the rest of the header.
        Some(tok)
    };
    let (rest, ()) = sp(
        rest,
        "message truncated after TIMESTAMP",
        "message truncated after TIMESTAMP",
    )?;
    Ok((rest, ts))
}

/// A header field (HOSTNAME, APP-NAME, PROCID, MSGID) and its SP: `-` or 1*max PRINTUSASCII.
/// The token is PRINTUSASCII, so ASCII; `message` makes it a `&str` with the rest of the header.
fn header_field<'a>(i: &'a [u8], f: &Field, limits: bool) -> PResult<'a, Option<&'a [u8]>> {
    let run = printusascii_run(i);
    if run == 0 {
        return match i.first() {
            None => fail(i, f.missing),
            Some(b' ') => fail(i, f.empty),
            Some(_) => fail(i, f.non_print),
        };
    }
    if limits && run > f.max {
        return fail(skip(i, f.max), f.too_long);
    }
    let (tok, rest) = i.split_at(run);
    let (rest, ()) = sp(rest, f.truncated, f.non_print)?;
    if tok == b"-" {
        return Ok((rest, None));
    }
    Ok((rest, Some(tok)))
}

/// STRUCTURED-DATA: NILVALUE or 1*SD-ELEMENT, followed by SP or the end of input. Gives the raw
/// SD-ELEMENTs; `message` checks them for UTF-8 (every PARAM-VALUE must be) with the header.
///
/// Also gives the positions of the elements and params ([`Spans`]), so that walking the SD
/// later does not scan it again.
#[allow(clippy::type_complexity)]
fn structured_data<'a>(i: &'a [u8], r: &Rules) -> PResult<'a, Option<(&'a [u8], Option<Spans>)>> {
    let mut spans = SpanRecorder::new();
    let rest = match i.first() {
        None => return fail(i, "STRUCTURED-DATA missing"),
        Some(b'-') => skip(i, 1),
        Some(b'[') => {
            let mut p = i;
            while p.first() == Some(&b'[') {
                let (next, id) = sd_element(p, r, i.len(), &mut spans)?;
                if r.unique_sd_ids {
                    let before = &i[..i.len() - p.len()];
                    if element_ids(before).any(|seen| seen == id) {
                        return fail(skip(p, 1), "duplicate SD-ID");
                    }
                }
                p = next;
            }
            p
        }
        Some(_) => return fail(i, "STRUCTURED-DATA must be \"-\" or start with \"[\""),
    };
    if !(rest.is_empty() || rest.first() == Some(&b' ')) {
        return fail(rest, "SP expected after STRUCTURED-DATA");
    }
    if i.first() == Some(&b'-') {
        return Ok((rest, None));
    }
    Ok((rest, Some((&i[..i.len() - rest.len()], spans.finish()))))
}

/// Expects the octet `c`, else fails with `reason`.
fn byte<'a>(c: u8, reason: &'static str) -> impl Fn(&'a [u8]) -> PResult<'a, ()> {
    move |i: &'a [u8]| match i.split_first() {
        Some((&b, rest)) if b == c => Ok((rest, ())),
        _ => fail(i, reason),
    }
}

/// An SD-NAME: 1..=max PRINTUSASCII except `=`, SP, `]`, `"`.
fn sd_name<'a>(
    i: &'a [u8],
    max: usize,
    missing: &'static str,
    too_long: &'static str,
) -> PResult<'a, &'a [u8]> {
    let run = sd_name_run(i);
    if run == 0 {
        return fail(i, missing);
    }
    if run > max {
        return fail(skip(i, max), too_long);
    }
    Ok((skip(i, run), &i[..run]))
}

/// One SD-ELEMENT: `[` SD-ID *(SP SD-PARAM) `]`; gives the SD-ID. Records the positions of
/// its parts in `spans`, as offsets from the start of the SD (`sd_len` octets before it ends).
fn sd_element<'a>(
    i: &'a [u8],
    r: &Rules,
    sd_len: usize,
    spans: &mut SpanRecorder,
) -> PResult<'a, &'a [u8]> {
    let at = |rest: &[u8]| sd_len - rest.len();
    let (p, ()) = byte(b'[', "SD-ELEMENT must start with \"[\"")(i)?;
    let (mut p, id) = sd_name(
        p,
        r.sd_name_max,
        "SD-ID missing or invalid",
        "SD-NAME too long (SD-ID > 32)",
    )?;
    let id_end = at(p);
    loop {
        match p.split_first() {
            Some((b']', rest)) => {
                spans.element(id_end, at(p));
                return Ok((rest, id));
            }
            Some((b' ', rest)) => {
                let (q, _name) = sd_name(
                    rest,
                    r.sd_name_max,
                    "PARAM-NAME missing or invalid",
                    "SD-NAME too long (PARAM-NAME > 32)",
                )?;
                let eq = at(q);
                let (q, _) = (
                    byte(b'=', "SD-PARAM: \"=\" expected after PARAM-NAME"),
                    byte(b'"', "SD-PARAM: opening quote expected after \"=\""),
                )
                    .parse(q)?;
                p = param_value(q, r.unescaped_bracket)?.0;
                // `p` starts right after the closing quote.
                spans.param(eq, at(p) - 1);
            }
            _ => return fail(p, "SD-ELEMENT: expected SP or \"]\" after SD-ID/SD-PARAM"),
        }
    }
}

/// PARAM-VALUE and its closing quote (the opening one is consumed).
fn param_value(i: &[u8], unescaped_bracket: bool) -> PResult<'_, ()> {
    let mut k = 0;
    loop {
        let Some(rel) = find_any(skip(i, k), b"\"\\]") else {
            return fail(skip(i, i.len()), "PARAM-VALUE unterminated");
        };
        k += rel;
        match i[k] {
            b'"' => return Ok((skip(i, k + 1), ())),
            b'\\' => k += 2,
            _ if unescaped_bracket => k += 1,
            _ => return fail(skip(i, k), "unescaped ] in PARAM-VALUE"),
        }
    }
}

/// The parts of an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ts {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    pub offset_secs: i32,
}

/// Checks a whole TIMESTAMP token (not NILVALUE) as RFC 5424 §6.2.3 wants it, with at most
/// `max_frac` fraction digits; the error is (offset in `t`, reason).
pub(crate) fn timestamp(t: &[u8], max_frac: usize) -> Result<Ts, (usize, &'static str)> {
    const BAD: &str = "malformed TIMESTAMP";
    let digits = |at: usize, n: usize| -> Result<u32, (usize, &'static str)> {
        let s = t.get(at..at + n).ok_or((at, BAD))?;
        s.iter().enumerate().try_fold(0u32, |v, (k, &c)| {
            if c.is_ascii_digit() {
                Ok(v * 10 + u32::from(c - b'0'))
            } else {
                Err((at + k, BAD))
            }
        })
    };
    let lit = |at: usize, c: u8| -> Result<(), (usize, &'static str)> {
        if t.get(at) == Some(&c) {
            Ok(())
        } else {
            Err((at, BAD))
        }
    };
    let year = digits(0, 4)?;
    lit(4, b'-')?;
    let month = digits(5, 2)?;
    lit(7, b'-')?;
    let day = digits(8, 2)?;
    if !(1..=12).contains(&month) {
        return Err((5, "timestamp: month out of range"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days_in_month).contains(&day) {
        return Err((8, "timestamp: invalid date (day out of range)"));
    }
    match t.get(10) {
        Some(b'T') => {}
        Some(b't') => return Err((10, "timestamp: \"T\" missing or lower case")),
        _ => return Err((10, BAD)),
    }
    let hour = digits(11, 2)?;
    lit(13, b':')?;
    let minute = digits(14, 2)?;
    lit(16, b':')?;
    let second = digits(17, 2)?;
    if hour > 23 {
        return Err((11, "timestamp: hour out of range"));
    }
    if minute > 59 {
        return Err((14, "timestamp: minute out of range"));
    }
    if second == 60 {
        return Err((17, "timestamp: leap second not allowed"));
    }
    if second > 60 {
        return Err((17, "timestamp: second out of range"));
    }
    let mut i = 19;
    let mut nanos = 0u32;
    match t.get(i) {
        Some(b'.') => {
            let n = skip(t, i + 1)
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if n == 0 {
                return Err((i + 1, BAD));
            }
            if n > max_frac {
                let reason = if max_frac < 9 {
                    "TIME-SECFRAC longer than 6 digits"
                } else {
                    "TIME-SECFRAC longer than 9 digits"
                };
                return Err((i + 1 + max_frac, reason));
            }
            nanos = digits(i + 1, n)? * 10u32.pow(9u32.saturating_sub(n as u32));
            i += 1 + n;
        }
        Some(b',') => return Err((i, "TIME-SECFRAC must use \".\"")),
        _ => {}
    }
    let offset_secs = match t.get(i) {
        None => return Err((i, "TIME-OFFSET missing")),
        Some(b'Z') => {
            i += 1;
            0
        }
        Some(b'z') => return Err((i, "timestamp: \"Z\" must be upper case")),
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(i + 1, 2)?;
            if t.get(i + 3) != Some(&b':') {
                return Err((i + 3, "TIME-NUMOFFSET requires \":\""));
            }
            let om = digits(i + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err((i + 1, "timestamp: TIME-OFFSET out of range"));
            }
            i += 6;
            // At most 23*3600+59*60, fits in i32.
            let secs = (oh * 3600 + om * 60) as i32;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        Some(_) => return Err((i, BAD)),
    };
    if i != t.len() {
        return Err((i, BAD));
    }
    Ok(Ts {
        year: year as i32,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_secs,
    })
}
