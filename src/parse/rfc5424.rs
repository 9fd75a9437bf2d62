//! RFC 5424 §6: the header, TIMESTAMP, STRUCTURED-DATA and MSG, strict or with the
//! [`Format::Auto`](super::Format::Auto) relaxations ([`Rules`]).

use nom::Parser;

use super::scan::{self, printusascii_run, sd_name_run, Stop};
use super::{element_ids, find_any, ParsedTs, SpanRecorder, Spans, StructuredData};
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
///
/// Inlined into its two callers with constant `rules` ([`Rules::STRICT`], [`Rules::AUTO`]), so
/// that each gets its own copy with the rules folded in.
#[inline(always)]
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

#[inline(always)]
fn message<'a>(input: &'a [u8], r: &Rules) -> Result<Message<'a>, nom::Err<PErr<'a>>> {
    let (i, pri, version) = match pri_version_fast(input, r.pri_leading_zero) {
        Some(found) => found,
        None => {
            let (i, pri) = pri(input, r.pri_leading_zero)?;
            let (i, version) = version(i)?;
            (i, pri, version)
        }
    };
    let (i, timestamp) = timestamp_field(i, r.max_frac)?;
    let (i, [hostname, app_name, procid, msgid]) = header_fields(i, r.header_limits)?;
    let (i, sd) = structured_data(i, r)?;
    // PRI, VERSION, TIMESTAMP, the header fields and the SD-NAMEs are ASCII (checked above), and
    // so is every PARAM-VALUE unless `structured_data` saw an octet >= 0x80: only then is the
    // whole head checked for UTF-8.
    let head = &input[..input.len() - i.len()];
    if sd.as_ref().is_some_and(|sd| sd.non_ascii) {
        if let Err(e) = std::str::from_utf8(head) {
            let at = skip(input, e.valid_up_to());
            return Err(err(at, "PARAM-VALUE not valid UTF-8"));
        }
    }
    debug_assert!(std::str::from_utf8(head).is_ok());
    // SAFETY: `head` is valid UTF-8: it is all ASCII (every octet was classified by the scans
    // above, which stop at octets >= 0x80 everywhere except in PARAM-VALUEs, where such an
    // octet sets `non_ascii`), or it was checked just above.
    let head = unsafe { std::str::from_utf8_unchecked(head) };
    // The `&str` of a part of `head` (a sub-slice of `input`; ASCII-bounded, so `get` succeeds).
    let text = |part: &'a [u8]| {
        let at = part.as_ptr() as usize - input.as_ptr() as usize;
        head.get(at..at + part.len()).unwrap_or_default()
    };
    let (timestamp, parsed_ts) = match timestamp {
        Some((t, ts)) => {
            let t = text(t);
            (Some(t), Some(ParsedTs::new(t, ts)))
        }
        None => (None, None),
    };
    let (hostname, app_name) = (hostname.map(text), app_name.map(text));
    let (procid, msgid) = (procid.map(text), msgid.map(text));
    let structured_data = sd.map(|sd| StructuredData::new(text(sd.raw), sd.spans));
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
        parsed_ts,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
        bom,
    })
}

/// `<PRI>VERSION SP` in its common shape, read directly: PRIVAL 1–3 digits (no leading zero
/// unless allowed) up to 191, VERSION 1–3 digits without a leading zero. `None` for anything
/// else, which the nom parsers ([`pri`], [`version`]) then read or reject with a reason.
#[inline]
fn pri_version_fast(i: &[u8], leading_zero: bool) -> Option<(&[u8], u8, u16)> {
    /// The run of up to 3 digits at `i[at..]`: its value and length (0 when none).
    #[inline(always)]
    fn digits(i: &[u8], at: usize) -> (u32, usize) {
        let (mut v, mut n) = (0u32, 0);
        while n < 3 {
            match i.get(at + n) {
                Some(&c) if c.is_ascii_digit() => v = v * 10 + u32::from(c - b'0'),
                _ => break,
            }
            n += 1;
        }
        (v, n)
    }
    if i.first() != Some(&b'<') {
        return None;
    }
    let (pri, n) = digits(i, 1);
    let zero_led = n > 1 && i[1] == b'0';
    if n == 0 || pri > 191 || (zero_led && !leading_zero) || i.get(n + 1) != Some(&b'>') {
        return None;
    }
    let at = n + 2;
    let (version, m) = digits(i, at);
    if m == 0 || i[at] == b'0' || i.get(at + m) != Some(&b' ') {
        return None;
    }
    // pri <= 191 and version <= 999 (3 digits): the casts are exact.
    Some((skip(i, at + m + 1), pri as u8, version as u16))
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

/// TIMESTAMP SP: NILVALUE or a checked RFC 3339 date-time (the text and its value).
#[inline]
fn timestamp_field(i: &[u8], max_frac: usize) -> PResult<'_, Option<(&[u8], Ts)>> {
    // The common case: a well-formed date-time followed by SP, read in place. Anything else
    // (NILVALUE, errors) takes the general path, which finds the token first.
    if let Some((ts, n)) = timestamp_fast(i, max_frac) {
        if i.get(n) == Some(&b' ') {
            return Ok((skip(i, n + 1), Some((&i[..n], ts))));
        }
    }
    timestamp_field_general(i, max_frac)
}

/// [`timestamp_field`] for NILVALUE, uncommon shapes and errors.
#[inline(never)]
fn timestamp_field_general(i: &[u8], max_frac: usize) -> PResult<'_, Option<(&[u8], Ts)>> {
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
        match timestamp(tok, max_frac) {
            // ASCII (checked by `timestamp`); made a `&str` with the rest of the header.
            Ok(ts) => Some((tok, ts)),
            Err((at, reason)) => return fail(skip(i, at), reason),
        }
    };
    let (rest, ()) = sp(
        rest,
        "message truncated after TIMESTAMP",
        "message truncated after TIMESTAMP",
    )?;
    Ok((rest, ts))
}

/// HOSTNAME SP APP-NAME SP PROCID SP MSGID SP: each `-` (`None`) or 1*max PRINTUSASCII. The
/// tokens are PRINTUSASCII, so ASCII; `message` makes them `&str` with the rest of the header.
#[inline(always)]
fn header_fields(i: &[u8], limits: bool) -> PResult<'_, [Option<&[u8]>; 4]> {
    let mut out = [None; 4];
    // `p`: offset in `i` of the next field.
    let mut p = 0;
    for (k, f) in [&HOSTNAME, &APP_NAME, &PROCID, &MSGID]
        .into_iter()
        .enumerate()
    {
        let rest = skip(i, p);
        let run = printusascii_run(rest);
        if run == 0 || (limits && run > f.max) || rest.get(run) != Some(&b' ') {
            return header_field_error(rest, run, f, limits);
        }
        let tok = &rest[..run];
        out[k] = (tok != b"-").then_some(tok);
        p += run + 1;
    }
    Ok((skip(i, p), out))
}

/// Why the header field at the start of `rest` (its PRINTUSASCII run is `run` long) is wrong.
#[cold]
#[inline(never)]
fn header_field_error<'a, O>(
    rest: &'a [u8],
    run: usize,
    f: &Field,
    limits: bool,
) -> PResult<'a, O> {
    if run == 0 {
        return match rest.first() {
            None => fail(rest, f.missing),
            Some(b' ') => fail(rest, f.empty),
            Some(_) => fail(rest, f.non_print),
        };
    }
    if limits && run > f.max {
        return fail(skip(rest, f.max), f.too_long);
    }
    sp(skip(rest, run), f.truncated, f.non_print)?;
    fail(skip(rest, run), f.non_print)
}

/// What [`structured_data`] found: the raw SD-ELEMENTs, their positions, and whether a
/// PARAM-VALUE holds non-ASCII octets (then `message` checks the SD for UTF-8).
struct Sd<'a> {
    raw: &'a [u8],
    spans: Option<Spans>,
    non_ascii: bool,
}

/// STRUCTURED-DATA: NILVALUE or 1*SD-ELEMENT, followed by SP or the end of input.
///
/// One pass over the SD: SD-NAMEs and PARAM-VALUEs are found with the 16-octet scans of
/// [`scan`](super::scan), and the positions of the elements and params ([`Spans`]) are kept,
/// with which values hold a backslash, so that walking the SD later does not scan it again.
#[inline(always)]
fn structured_data<'a>(i: &'a [u8], r: &Rules) -> PResult<'a, Option<Sd<'a>>> {
    match i.first() {
        None => return fail(i, "STRUCTURED-DATA missing"),
        Some(b'-') => {
            let rest = skip(i, 1);
            return match rest.first() {
                None | Some(b' ') => Ok((rest, None)),
                Some(_) => fail(rest, "SP expected after STRUCTURED-DATA"),
            };
        }
        Some(b'[') => {}
        Some(_) => return fail(i, "STRUCTURED-DATA must be \"-\" or start with \"[\""),
    }
    let mut spans = SpanRecorder::new(i.len());
    let mut non_ascii = false;
    // `p`: offset in `i` of the next octet to look at.
    let mut p = 0;
    while i.get(p) == Some(&b'[') {
        let start = p;
        p += 1;
        let id = sd_name(
            i,
            p,
            r.sd_name_max,
            "SD-ID missing or invalid",
            "SD-NAME too long (SD-ID > 32)",
        )?;
        p += id;
        let id_end = p;
        loop {
            match i.get(p) {
                Some(b']') => {
                    spans.element(id_end, p);
                    p += 1;
                    break;
                }
                Some(b' ') => {
                    p += 1;
                    p += sd_name(
                        i,
                        p,
                        r.sd_name_max,
                        "PARAM-NAME missing or invalid",
                        "SD-NAME too long (PARAM-NAME > 32)",
                    )?;
                    let eq = p;
                    // `="` in one compare; on a mismatch, say which of the two is missing.
                    if i.get(p..p + 2) != Some(b"=\"") && i.get(p) != Some(&b'=') {
                        return fail(skip(i, p), "SD-PARAM: \"=\" expected after PARAM-NAME");
                    }
                    if i.get(p..p + 2) != Some(b"=\"") {
                        return fail(
                            skip(i, p + 1),
                            "SD-PARAM: opening quote expected after \"=\"",
                        );
                    }
                    let (close, escaped, wide) = param_value(i, p + 2, r.unescaped_bracket)?;
                    non_ascii |= wide;
                    spans.param(eq, close, escaped);
                    p = close + 1;
                }
                _ => {
                    return fail(
                        skip(i, p),
                        "SD-ELEMENT: expected SP or \"]\" after SD-ID/SD-PARAM",
                    )
                }
            }
        }
        if r.unique_sd_ids && start > 0 {
            let id = &i[start + 1..id_end];
            if element_ids(&i[..start]).any(|seen| seen == id) {
                return fail(skip(i, start + 1), "duplicate SD-ID");
            }
        }
    }
    let rest = skip(i, p);
    if !(rest.is_empty() || rest.first() == Some(&b' ')) {
        return fail(rest, "SP expected after STRUCTURED-DATA");
    }
    let sd = Sd {
        raw: &i[..p],
        spans: spans.finish(),
        non_ascii,
    };
    Ok((rest, Some(sd)))
}

/// The length of the SD-NAME at `i[at..]`: 1..=max PRINTUSASCII except `=`, SP, `]`, `"`.
#[inline]
fn sd_name<'a>(
    i: &'a [u8],
    at: usize,
    max: usize,
    missing: &'static str,
    too_long: &'static str,
) -> Result<usize, nom::Err<PErr<'a>>> {
    let rest = skip(i, at);
    let run = sd_name_run(rest);
    if run == 0 {
        return Err(err(rest, missing));
    }
    if run > max {
        return Err(err(skip(rest, max), too_long));
    }
    Ok(run)
}

/// The PARAM-VALUE at `i[at..]` (after its opening quote): the offset of its closing quote,
/// whether it holds a backslash, and whether it holds octets >= 0x80.
#[inline(always)]
fn param_value(
    i: &[u8],
    at: usize,
    unescaped_bracket: bool,
) -> Result<(usize, bool, bool), nom::Err<PErr<'_>>> {
    // Most values are ASCII without `\` or `]`: one scan to the closing quote.
    let k = at + scan::run(skip(i, at), Stop::ValueAscii);
    if i.get(k) == Some(&b'"') {
        return Ok((k, false, false));
    }
    param_value_rest(i, k, unescaped_bracket)
}

/// [`param_value`] from the first octet at `k` that is not plain ASCII value text.
#[inline(never)]
fn param_value_rest(
    i: &[u8],
    mut k: usize,
    unescaped_bracket: bool,
) -> Result<(usize, bool, bool), nom::Err<PErr<'_>>> {
    let (mut escaped, mut wide) = (false, false);
    loop {
        match i.get(k) {
            None => return Err(err(skip(i, i.len()), "PARAM-VALUE unterminated")),
            Some(b'"') => return Ok((k, escaped, wide)),
            Some(b'\\') => {
                escaped = true;
                // The escaped octet is skipped by the scan: note it if it is not ASCII.
                wide |= i.get(k + 1).is_some_and(|&c| c >= 0x80);
                k += 2;
            }
            Some(b']') if unescaped_bracket => k += 1,
            Some(b']') => return Err(err(skip(i, k), "unescaped ] in PARAM-VALUE")),
            Some(_) => wide = true,
        }
        let stop = if wide { Stop::Value } else { Stop::ValueAscii };
        k += scan::run(skip(i, k), stop);
    }
}

/// The parts of an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ts {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanos: u32,
    pub offset_secs: i32,
}

impl Ts {
    /// The parts as read (each already range-checked, so the narrowing casts are exact).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn new(
        year: u32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        nanos: u32,
        offset_secs: i32,
    ) -> Ts {
        Ts {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            nanos,
            offset_secs,
        }
    }
}

/// Checks a whole TIMESTAMP token (not NILVALUE) as RFC 5424 §6.2.3 wants it, with at most
/// `max_frac` fraction digits; the error is (offset in `t`, reason).
pub(crate) fn timestamp(t: &[u8], max_frac: usize) -> Result<Ts, (usize, &'static str)> {
    if let Some((ts, n)) = timestamp_fast(t, max_frac) {
        if n == t.len() {
            return Ok(ts);
        }
    }
    timestamp_general(t, max_frac)
}

/// Powers of ten for TIME-SECFRAC: `TEN_POW[9 - n]` turns `n` fraction digits into nanoseconds.
const TEN_POW: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// The common shape of a TIMESTAMP, `YYYY-MM-DDTHH:MM:SS[.F{1,max_frac}](Z|+HH:MM|-HH:MM)`, read
/// at fixed positions from the start of `t`: the value and the length of the timestamp, or
/// `None` for anything else ([`timestamp_general`] then reads it, or says what is wrong). It
/// accepts nothing that [`timestamp_general`] rejects.
///
/// The date and time are checked and read 8 octets at a time (SWAR): an octet is a digit when
/// its high nibble is 3 and its low nibble plus 6 does not carry into the high nibble.
#[inline(always)]
pub(crate) fn timestamp_fast(t: &[u8], max_frac: usize) -> Option<(Ts, usize)> {
    const HI: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const LO: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    /// Flags (non-zero octets) the octets of `x` that are not ASCII digits.
    #[inline(always)]
    fn non_digits(x: u64) -> u64 {
        ((x & HI) ^ 0x3030_3030_3030_3030) | (((x & LO) + 0x0606_0606_0606_0606) & HI)
    }
    /// Octet k of the result is 10 * digit(k) + digit(k + 1) (for digits; < 256 for any octet).
    #[inline(always)]
    fn pairs(x: u64) -> u64 {
        let v = x & LO;
        v * 10 + (v >> 8)
    }
    let word = |k: usize| {
        t.get(k..k + 8)
            .and_then(|s| s.first_chunk())
            .map(|w| u64::from_le_bytes(*w))
    };
    // `YYYY-MM-`, `DDTHH:MM`, `:SS` and the octet after the seconds.
    let (w0, w1) = (word(0)?, word(8)?);
    let w2 = u64::from(u32::from_le_bytes(*t.get(16..20)?.first_chunk()?));
    // Digit octets (0xFF) and separator octets, per word.
    const D0: u64 = 0x00FF_FF00_FFFF_FFFF;
    const S0: u64 = 0xFF00_00FF_0000_0000;
    const T0: u64 = u64::from_le_bytes(*b"0000-00-");
    const D1: u64 = 0xFFFF_00FF_FF00_FFFF;
    const S1: u64 = 0x0000_FF00_00FF_0000;
    const T1: u64 = u64::from_le_bytes(*b"00T00:00");
    const D2: u64 = 0x0000_0000_00FF_FF00;
    const S2: u64 = 0x0000_0000_0000_00FF;
    const T2: u64 = u32::from_le_bytes(*b":00\0") as u64;
    let bad = (non_digits(w0) & D0)
        | ((w0 ^ T0) & S0)
        | (non_digits(w1) & D1)
        | ((w1 ^ T1) & S1)
        | (non_digits(w2) & D2)
        | ((w2 ^ T2) & S2);
    if bad != 0 {
        return None;
    }
    let (p0, p1, p2) = (pairs(w0), pairs(w1), pairs(w2));
    let byte = |p: u64, k: u32| ((p >> (8 * k)) & 0xFF) as u32;
    let year = byte(p0, 0) * 100 + byte(p0, 2);
    let (month, day) = (byte(p0, 5), byte(p1, 0));
    let (hour, minute, second) = (byte(p1, 3), byte(p1, 6), byte(p2, 1));
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let (mut k, mut nanos) = (19, 0);
    if t[19] == b'.' {
        let (frac, n) = match word(20).map(|w| (w, non_digits(w).trailing_zeros() / 8)) {
            // 1 to 7 digits followed by a non-digit: all at once.
            Some((w, n @ 1..=7)) => (parse_digits(w, n as usize), n as usize),
            Some((_, 0)) => return None,
            _ => frac_digits(&t[20..]),
        };
        if n == 0 || n > max_frac {
            return None;
        }
        nanos = frac * TEN_POW[9 - n];
        k = 20 + n;
    }
    let (offset_secs, end) = match t.get(k)? {
        b'Z' => (0, k + 1),
        &sign @ (b'+' | b'-') => {
            let o: &[u8; 6] = t.get(k..)?.first_chunk()?;
            let d = |k: usize| u32::from(o[k].wrapping_sub(b'0'));
            if d(1) > 9 || d(2) > 9 || o[3] != b':' || d(4) > 9 || d(5) > 9 {
                return None;
            }
            let (oh, om) = (d(1) * 10 + d(2), d(4) * 10 + d(5));
            if oh > 23 || om > 59 {
                return None;
            }
            // At most 23*3600+59*60, fits in i32.
            let secs = (oh * 3600 + om * 60) as i32;
            (if sign == b'-' { -secs } else { secs }, k + 6)
        }
        _ => return None,
    };
    let ts = Ts::new(year, month, day, hour, minute, second, nanos, offset_secs);
    Some((ts, end))
}

/// The value of the first `n` (1..=8) octets of `w` (little-endian), all ASCII digits.
#[inline(always)]
pub(crate) fn parse_digits(w: u64, n: usize) -> u32 {
    // Keep the n digits, moved up so that zeros lead: an 8-digit number, read in three steps.
    let v = (w & 0x0F0F_0F0F_0F0F_0F0F) << (8 * (8 - n));
    // Products that leave the word are not needed (wrapping is intended).
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul((100 << 16) + 1) >> 16;
    let v = (v & 0x0000_FFFF_0000_FFFF).wrapping_mul((10_000 << 32) + 1) >> 32;
    v as u32
}

/// The leading digits of `t` (at most 10 are looked at): their value (of the first 9) and
/// their count.
fn frac_digits(t: &[u8]) -> (u32, usize) {
    let n = t.iter().take(10).take_while(|c| c.is_ascii_digit()).count();
    let v = t
        .iter()
        .take(n.min(9))
        .fold(0u32, |v, &c| v * 10 + u32::from(c - b'0'));
    (v, n)
}

/// Days in `month` (1–12) of `year`.
#[inline]
fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// [`timestamp`] for every shape, with the precise error.
pub(crate) fn timestamp_general(t: &[u8], max_frac: usize) -> Result<Ts, (usize, &'static str)> {
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
    if !(1..=days_in_month(year, month)).contains(&day) {
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
    Ok(Ts::new(
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_secs,
    ))
}
