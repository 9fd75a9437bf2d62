//! Parse: RFC 5424 (and RFC 3164 as a fallback) into a [`Message`] that borrows from the frame.
//!
//! The parser works over `&[u8]` and does not allocate: header fields are `&str` slices of the
//! frame, STRUCTURED-DATA is validated once and then walked lazily ([`StructuredData::elements`],
//! [`Element::params`]), and escaped PARAM-VALUEs are resolved only when someone asks
//! ([`ParamValue::chunks`] yields the unescaped value in borrowed pieces).
//!
//! The RFC 5424 hot path is written by hand for speed, inside nom's types (`IResult`,
//! `nom::Err`): `<PRI>VERSION` in its common shape is read directly, with the `nom` parsers as
//! the fallback that names what is wrong; the TIMESTAMP is read at fixed positions, 8 octets at a
//! time, with a general reader for other shapes and for errors; STRUCTURED-DATA is checked in one
//! pass that keeps the positions of its elements and params and which values hold a backslash.
//! Runs of PRINTUSASCII, SD-NAMEs and PARAM-VALUEs are found 16 octets at a time (`scan`, SSE2
//! on x86_64). The head is checked for UTF-8 only when a PARAM-VALUE holds an octet >= 0x80.
//! `nom` also drives RFC 3164.
//!
//! # Formats
//!
//! * [`Format::Rfc5424`]: RFC 5424 §6 ABNF plus the syntax MUSTs of its prose, exactly (PRIVAL
//!   0–191 without leading zeros, VERSION 1–999, TIMESTAMP with upper-case `T`/`Z`, an existing
//!   date, no leap second, 1–6 fraction digits and a required offset, PRINTUSASCII header fields
//!   of at most 255/48/128/32 octets, SD-NAMEs of 1–32 octets, unique SD-IDs, `"` `\` `]` escaped
//!   in UTF-8 PARAM-VALUEs, a MSG that starts with a BOM must be UTF-8).
//! * [`Format::Auto`] (the server default): RFC 5424 as real senders write it, with these
//!   relaxations (and nothing else):
//!   * SD-NAMEs (SD-ID and PARAM-NAME) of any length ≥ 1 (PKS/TKGI sends label keys such as
//!     `service.istio.io/canonical-revision` as PARAM-NAMEs);
//!   * HOSTNAME, APP-NAME, PROCID and MSGID longer than 255/48/128/32 octets;
//!   * TIME-SECFRAC with 1–9 digits (nanoseconds);
//!   * PRIVAL with leading zeros (`<013>`), still at most 3 digits and at most 191;
//!   * a repeated SD-ID (both elements are kept, in order);
//!   * an unescaped `]` inside a (quoted) PARAM-VALUE, which is unambiguous;
//!   * a MSG that starts with a BOM but is not valid UTF-8 (`bom` is set, `msg` is the raw octets).
//!
//!   A frame that is not RFC 5424 even under those rules is tried as RFC 3164 (see below). When
//!   both fail, the error reported is the RFC 5424 one if the frame starts like RFC 5424
//!   (`<PRI>` followed by a digit), else the RFC 3164 one.
//! * [`Format::Rfc3164`]: `<PRI>TIMESTAMP SP [HOSTNAME SP] [TAG["[" PID "]"] ":" [SP]] MSG` where
//!   TIMESTAMP is `Mmm dd hh:mm:ss` (day space- or zero-padded) or an RFC 3339 timestamp (as
//!   rsyslog sends it). The first word after the timestamp is the TAG when it ends in `:` or holds
//!   `[PID]:`, else the HOSTNAME; a TAG is only recognised when it ends with `:`. PRIVAL may have
//!   leading zeros. The result has `protocol` [`Protocol::Rfc3164`], no version, `app_name` = TAG,
//!   `procid` = PID, no MSGID and no STRUCTURED-DATA. MSG is everything after the header (one SP
//!   after the TAG's `:` is dropped); it is not checked for UTF-8.
//!
//! In every format a leading UTF-8 BOM is removed from `msg` (and `bom` set); a trailing LF stays.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use serde::Deserialize;

mod rfc3164;
mod rfc5424;
mod scan;

#[cfg(test)]
use scan::{printusascii_run, sd_name_run};

/// Which syntax to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 5424 as real senders write it (SD-NAMEs over 32 characters, ...), else RFC 3164.
    #[default]
    Auto,
    /// RFC 5424's ABNF exactly; anything else is a parse error.
    Rfc5424,
    /// RFC 3164 (BSD syslog) only.
    Rfc3164,
}

/// The syntax a message was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 5424.
    Rfc5424,
    /// RFC 3164.
    Rfc3164,
}

/// A parsed syslog message; every field borrows from the frame.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The syntax it was read with.
    pub protocol: Protocol,
    /// PRIVAL (0..=191): facility = pri >> 3, severity = pri & 7.
    pub pri: u8,
    /// VERSION (RFC 5424 only).
    pub version: Option<u16>,
    /// TIMESTAMP exactly as sent; `None` for NILVALUE.
    pub timestamp: Option<&'a str>,
    /// TIMESTAMP's value as the parser read it, for [`Message::timestamp_parsed`].
    parsed_ts: Option<ParsedTs>,
    /// HOSTNAME; `None` for NILVALUE.
    pub hostname: Option<&'a str>,
    /// APP-NAME (RFC 3164: the TAG); `None` for NILVALUE.
    pub app_name: Option<&'a str>,
    /// PROCID; `None` for NILVALUE.
    pub procid: Option<&'a str>,
    /// MSGID; `None` for NILVALUE.
    pub msgid: Option<&'a str>,
    /// STRUCTURED-DATA; `None` for NILVALUE.
    pub structured_data: Option<StructuredData<'a>>,
    /// MSG octets with a leading UTF-8 BOM removed (trailing LF kept); `None` when absent.
    pub msg: Option<&'a [u8]>,
    /// Whether MSG started with a UTF-8 BOM.
    pub bom: bool,
}

impl<'a> Message<'a> {
    /// Facility (PRI >> 3).
    pub fn facility(&self) -> u8 {
        self.pri >> 3
    }

    /// Severity (PRI & 7).
    pub fn severity(&self) -> u8 {
        self.pri & 7
    }

    /// The timestamp as a date-time, `None` for NILVALUE.
    ///
    /// Works for every RFC 3339 timestamp the parser accepted (RFC 5424, and RFC 3164 frames that
    /// carry one); a BSD timestamp (`Nov 26 10:00:00`) has neither year nor offset and gives
    /// `None`. Does not allocate.
    pub fn timestamp_parsed(&self) -> Option<DateTime<FixedOffset>> {
        let text = self.timestamp?;
        // The parser's reading, unless `timestamp` was changed since.
        let ts = match self.parsed_ts {
            Some(p) if p.text == (text.as_ptr() as usize, text.len()) => p.ts,
            _ => rfc5424::timestamp(text.as_bytes(), 9).ok()?,
        };
        let date = NaiveDate::from_ymd_opt(i32::from(ts.year), ts.month.into(), ts.day.into())?;
        let naive =
            date.and_hms_nano_opt(ts.hour.into(), ts.minute.into(), ts.second.into(), ts.nanos)?;
        let offset = FixedOffset::east_opt(ts.offset_secs)?;
        offset.from_local_datetime(&naive).single()
    }
}

/// A TIMESTAMP's value as read by the parser, and which text it was read from (address and
/// length), so that [`Message::timestamp_parsed`] reads it again if `timestamp` is changed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParsedTs {
    text: (usize, usize),
    ts: rfc5424::Ts,
}

impl ParsedTs {
    /// `ts`, read from `text`.
    pub(crate) fn new(text: &str, ts: rfc5424::Ts) -> Self {
        ParsedTs {
            text: (text.as_ptr() as usize, text.len()),
            ts,
        }
    }
}

/// Validated STRUCTURED-DATA, walked lazily.
///
/// The raw text runs from the first `[` to the last `]` (all SD-ELEMENTs); it was checked once by
/// [`parse`], so walking it cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct StructuredData<'a> {
    raw: &'a str,
    /// Where the elements and params are, as found by the parser (`None`: walk by scanning).
    spans: Option<Spans>,
}

/// Most SD-ELEMENTs / SD-PARAMs whose positions the parser keeps; an SD with more (or longer
/// than 64 KiB) is walked by scanning, with the same result.
const MAX_ELEMENTS: usize = 4;
const MAX_PARAMS: usize = 16;

/// Positions (offsets in the SD's raw text) found while the parser validated it, so that
/// walking the SD does not scan it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spans {
    /// Per element: the end of its SD-ID (the SP or `]` after it), its closing `]`, and the
    /// index one past its last param in `params`.
    elements: [(u16, u16, u8); MAX_ELEMENTS],
    /// Per param: its `=` and the closing `"` of its value.
    params: [(u16, u16); MAX_PARAMS],
    /// Bit k: the value of param k holds a backslash (may hold an escape).
    escaped: u16,
    n_elements: u8,
    n_params: u8,
}

/// Collects [`Spans`] during validation; gives up (and the walk scans) past the limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanRecorder {
    spans: Spans,
    ok: bool,
}

impl SpanRecorder {
    /// Nothing recorded yet, for an SD that starts `len` octets before the end of the frame
    /// (offsets are kept as `u16`: past 64 KiB nothing is recorded).
    pub(crate) fn new(len: usize) -> Self {
        SpanRecorder {
            spans: Spans {
                elements: [(0, 0, 0); MAX_ELEMENTS],
                params: [(0, 0); MAX_PARAMS],
                escaped: 0,
                n_elements: 0,
                n_params: 0,
            },
            ok: len <= usize::from(u16::MAX),
        }
    }

    /// A param of the current element: offsets of its `=` and closing `"`, and whether its
    /// value holds a backslash.
    #[inline]
    pub(crate) fn param(&mut self, eq: usize, close: usize, escaped: bool) {
        let n = usize::from(self.spans.n_params);
        match self.spans.params.get_mut(n) {
            // Offsets are below `len` (checked in `new`): the casts are exact.
            Some(slot) if self.ok => {
                *slot = (eq as u16, close as u16);
                self.spans.escaped |= u16::from(escaped) << n;
                self.spans.n_params += 1;
            }
            _ => self.ok = false,
        }
    }

    /// The element whose params were just recorded: offsets of its SD-ID's end and its `]`.
    #[inline]
    pub(crate) fn element(&mut self, id_end: usize, close: usize) {
        let n = usize::from(self.spans.n_elements);
        match self.spans.elements.get_mut(n) {
            Some(slot) if self.ok => {
                *slot = (id_end as u16, close as u16, self.spans.n_params);
                self.spans.n_elements += 1;
            }
            _ => self.ok = false,
        }
    }

    /// The spans, unless a limit was passed.
    pub(crate) fn finish(self) -> Option<Spans> {
        self.ok.then_some(self.spans)
    }
}

impl<'a> StructuredData<'a> {
    /// Validated SD-ELEMENTs `raw` with the positions the parser found in them.
    pub(crate) fn new(raw: &'a str, spans: Option<Spans>) -> Self {
        StructuredData { raw, spans }
    }

    /// The STRUCTURED-DATA as sent (all SD-ELEMENTs, escapes not resolved).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The SD-ELEMENTs in order.
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            rest: self.raw,
            raw: self.raw,
            spans: self.spans,
            next: 0,
        }
    }

    /// The first element whose SD-ID is `id`.
    pub fn element(&self, id: &str) -> Option<Element<'a>> {
        self.elements().find(|e| e.id == id)
    }
}

/// Iterator over the SD-ELEMENTs of a [`StructuredData`] (see [`StructuredData::elements`]).
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    /// Scanning: the elements not yet walked.
    rest: &'a str,
    /// With spans: the whole SD, the spans and the index of the next element.
    raw: &'a str,
    spans: Option<Spans>,
    next: u8,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    #[inline]
    fn next(&mut self) -> Option<Element<'a>> {
        match &self.spans {
            Some(sp) => Self::next_cached(sp, &mut self.next, self.raw),
            None => self.next_scanned(),
        }
    }
}

impl<'a> Elements<'a> {
    /// The next element from the positions the parser found.
    #[inline(always)]
    fn next_cached(sp: &Spans, next: &mut u8, raw: &'a str) -> Option<Element<'a>> {
        {
            let k = usize::from(*next);
            if k >= usize::from(sp.n_elements) {
                return None;
            }
            *next += 1;
            let (id_end, close, params_end) = *sp.elements.get(k)?;
            let (start, params_start) = match k.checked_sub(1) {
                Some(prev) => (usize::from(sp.elements[prev].1) + 1, sp.elements[prev].2),
                None => (0, 0),
            };
            let (id_end, close) = (usize::from(id_end), usize::from(close));
            Some(Element {
                id: raw.get(start + 1..id_end)?,
                params_raw: raw.get(id_end..close)?,
                cached: Some(CachedParams {
                    raw,
                    params: sp.params,
                    escaped: sp.escaped,
                    next: params_start,
                    end: params_end,
                    // The SP before the first PARAM-NAME is at `id_end`.
                    prev_close: id_end.checked_sub(1)?,
                }),
            })
        }
    }

    /// The next element, found by scanning (the parser did not keep the positions).
    #[inline(never)]
    fn next_scanned(&mut self) -> Option<Element<'a>> {
        let (id_end, close) = split_element(self.rest.as_bytes())?;
        let el = Element {
            id: self.rest.get(1..id_end)?,
            params_raw: self.rest.get(id_end..close)?,
            cached: None,
        };
        self.rest = self.rest.get(close + 1..)?;
        Some(el)
    }
}

/// The params of one element as found by the parser: `params[next..end]` of the whole SD
/// `raw`; `prev_close` is the closing quote of the previous param (one before the SP that
/// precedes the next PARAM-NAME).
#[derive(Debug, Clone, Copy)]
struct CachedParams<'a> {
    raw: &'a str,
    params: [(u16, u16); MAX_PARAMS],
    escaped: u16,
    next: u8,
    end: u8,
    prev_close: usize,
}

/// For SD-ELEMENTs at the start of `b` (already validated): the end of the SD-ID and the index
/// of the element's closing `]`.
fn split_element(b: &[u8]) -> Option<(usize, usize)> {
    if b.first() != Some(&b'[') {
        return None;
    }
    let id_end = find_any(b, b" ]")?;
    // Find the closing `]`: jump from quote to quote, skipping every quoted PARAM-VALUE (which
    // may hold `]`); outside the quotes only `]` and `"` matter.
    let mut i = id_end;
    loop {
        i += find_any(b.get(i..)?, b"]\"")?;
        match b[i] {
            b']' => return Some((id_end, i)),
            _ => i = value_end(b, i + 1)? + 1,
        }
    }
}

/// The SD-IDs of the validated SD-ELEMENTs in `b`.
pub(crate) fn element_ids(mut b: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (id_end, close) = split_element(b)?;
        let id = b.get(1..id_end)?;
        b = b.get(close + 1..)?;
        Some(id)
    })
}

/// Index of the closing (unescaped) `"` of a PARAM-VALUE that starts at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        let rel = find_any(b.get(i..)?, b"\"\\")?;
        i += rel;
        if b[i] == b'"' {
            return Some(i);
        }
        i += 2;
    }
}

/// One SD-ELEMENT.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// SD-ID.
    pub id: &'a str,
    params_raw: &'a str,
    cached: Option<CachedParams<'a>>,
}

impl<'a> Element<'a> {
    /// The SD-PARAMs in order (names may repeat).
    pub fn params(&self) -> Params<'a> {
        Params {
            rest: self.params_raw,
            cached: self.cached,
        }
    }

    /// The value of the first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<ParamValue<'a>> {
        self.params().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Iterator over the SD-PARAMs of an [`Element`] as `(PARAM-NAME, value)` (see [`Element::params`]).
#[derive(Debug, Clone)]
pub struct Params<'a> {
    /// Scanning: the params not yet walked.
    rest: &'a str,
    /// The positions found by the parser, when it kept them.
    cached: Option<CachedParams<'a>>,
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a str, ParamValue<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.cached {
            Some(c) => c.next_param(),
            None => self.next_scanned(),
        }
    }
}

impl<'a> CachedParams<'a> {
    /// The next param from the positions the parser found.
    #[inline(always)]
    fn next_param(&mut self) -> Option<(&'a str, ParamValue<'a>)> {
        if self.next >= self.end {
            return None;
        }
        let (eq, close) = *self.params.get(usize::from(self.next))?;
        let plain = self.escaped & (1 << self.next) == 0;
        let (eq, close) = (usize::from(eq), usize::from(close));
        let name = self.raw.get(self.prev_close + 2..eq)?;
        let raw = self.raw.get(eq + 2..close)?;
        self.next += 1;
        self.prev_close = close;
        Some((name, ParamValue { raw, plain }))
    }
}

impl<'a> Params<'a> {
    /// The next param, found by scanning (the parser did not keep the positions).
    #[inline(never)]
    fn next_scanned(&mut self) -> Option<(&'a str, ParamValue<'a>)> {
        // Each param is ` NAME="VALUE"`.
        let b = self.rest.as_bytes();
        if b.first() != Some(&b' ') {
            return None;
        }
        let eq = find_any(b, b"=")?;
        let end = value_end(b, eq + 2)?;
        let item = (
            self.rest.get(1..eq)?,
            ParamValue {
                raw: self.rest.get(eq + 2..end)?,
                plain: false,
            },
        );
        self.rest = self.rest.get(end + 1..)?;
        Some(item)
    }
}

/// A PARAM-VALUE as sent (escapes `\"` `\\` `\]` not yet resolved).
#[derive(Debug, Clone, Copy)]
pub struct ParamValue<'a> {
    raw: &'a str,
    /// Known to hold no backslash (the parser saw it): the value is `raw`, no scan needed.
    plain: bool,
}

impl PartialEq for ParamValue<'_> {
    /// Equal when sent the same (`plain` is only a hint).
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for ParamValue<'_> {}

impl<'a> ParamValue<'a> {
    /// The value as it stands on the wire.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The unescaped value as pieces (no allocation): `a\"b` gives `a`, `"b`.
    ///
    /// `\"`, `\\` and `\]` lose their backslash; any other backslash is kept (RFC 5424 §6.3.3).
    /// No piece is empty; an empty value gives no piece.
    pub fn chunks(&self) -> Chunks<'a> {
        Chunks {
            rest: self.raw,
            plain: self.plain,
        }
    }

    /// The unescaped value; borrows unless the value holds an escape.
    pub fn unescaped(&self) -> Cow<'a, str> {
        // Most values hold no backslash at all: borrow (the parser may already know).
        if self.plain || find_any(self.raw.as_bytes(), b"\\").is_none() {
            return Cow::Borrowed(self.raw);
        }
        let mut it = self.chunks();
        match (it.next(), it.next()) {
            (None, _) => Cow::Borrowed(""),
            (Some(one), None) => Cow::Borrowed(one),
            (Some(a), Some(b)) => {
                let mut s = String::with_capacity(self.raw.len());
                s.push_str(a);
                s.push_str(b);
                it.for_each(|c| s.push_str(c));
                Cow::Owned(s)
            }
        }
    }
}

impl std::fmt::Display for ParamValue<'_> {
    /// Writes the unescaped value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.chunks().try_for_each(|c| f.write_str(c))
    }
}

/// Iterator over the unescaped pieces of a [`ParamValue`] (see [`ParamValue::chunks`]).
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a str,
    /// `rest` holds no backslash: it is the one remaining piece.
    plain: bool,
}

fn is_escapable(c: u8) -> bool {
    matches!(c, b'"' | b'\\' | b']')
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        if self.plain {
            return Some(std::mem::take(&mut self.rest));
        }
        self.next_escaped()
    }
}

impl<'a> Chunks<'a> {
    /// The next piece of a value that may hold escapes.
    #[inline(never)]
    fn next_escaped(&mut self) -> Option<&'a str> {
        let b = self.rest.as_bytes();
        // When the rest starts with an escape, drop its backslash and keep the escaped char.
        let start = usize::from(b.len() >= 2 && b[0] == b'\\' && is_escapable(b[1]));
        let mut search = start * 2;
        loop {
            let Some(rel) = b.get(search..).and_then(|t| find_any(t, b"\\")) else {
                let chunk = self.rest.get(start..);
                self.rest = "";
                return chunk;
            };
            let j = search + rel;
            if b.get(j + 1).is_some_and(|&c| is_escapable(c)) {
                let chunk = self.rest.get(start..j);
                self.rest = self.rest.get(j..).unwrap_or("");
                return chunk;
            }
            search = j + 1;
        }
    }
}

/// Why a frame is not a syslog message, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the frame where the problem was found.
    pub offset: usize,
    /// What is wrong (`PRI > 191`, `unescaped ] in PARAM-VALUE`, ...).
    pub reason: &'static str,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Parses one frame (SYSLOG-MSG, trailer already removed by the framer; a trailing LF counted in
/// MSG-LEN may still be there and stays in `msg`).
///
/// See the [module documentation](self) for what each [`Format`] accepts.
pub fn parse(frame: &[u8], format: Format) -> Result<Message<'_>, ParseError> {
    match format {
        Format::Rfc5424 => rfc5424::parse(frame, &rfc5424::Rules::STRICT),
        Format::Rfc3164 => rfc3164::parse(frame),
        Format::Auto => match rfc5424::parse(frame, &rfc5424::Rules::AUTO) {
            Ok(m) => Ok(m),
            // Not RFC 5424: try RFC 3164; if that fails too, report the error of the syntax the
            // frame looks like.
            Err(e5424) => rfc3164::parse(frame).map_err(|e3164| {
                if rfc5424::starts_like(frame) {
                    e5424
                } else {
                    e3164
                }
            }),
        },
    }
}

// ---- shared nom plumbing -------------------------------------------------------------------

/// nom error: where (the remaining input, a suffix of the frame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PErr<'a> {
    rest: &'a [u8],
    reason: &'static str,
}

impl<'a> nom::error::ParseError<&'a [u8]> for PErr<'a> {
    fn from_error_kind(rest: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        PErr {
            rest,
            reason: "syntax error",
        }
    }

    fn append(_: &'a [u8], _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

/// nom result over the frame with [`PErr`].
pub(crate) type PResult<'a, O> = nom::IResult<&'a [u8], O, PErr<'a>>;

/// A definitive (non-backtracking) error at `rest` with `reason`.
pub(crate) fn fail<'a, O>(rest: &'a [u8], reason: &'static str) -> PResult<'a, O> {
    Err(err(rest, reason))
}

/// The definitive nom error at `rest` with `reason`.
pub(crate) fn err<'a>(rest: &'a [u8], reason: &'static str) -> nom::Err<PErr<'a>> {
    nom::Err::Failure(PErr { rest, reason })
}

/// Turns a nom error into a [`ParseError`] with an offset into `frame`.
pub(crate) fn to_error(frame: &[u8], e: nom::Err<PErr<'_>>) -> ParseError {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => ParseError {
            offset: frame.len().saturating_sub(e.rest.len()),
            reason: e.reason,
        },
        nom::Err::Incomplete(_) => ParseError {
            offset: frame.len(),
            reason: "message truncated",
        },
    }
}

/// `input` without its first `n` octets (empty when shorter).
pub(crate) fn skip(input: &[u8], n: usize) -> &[u8] {
    input.get(n..).unwrap_or_default()
}

/// `<PRI>`: 1–3 digits, value 0–191; leading zeros only when `leading_zero` is allowed.
pub(crate) fn pri(input: &[u8], leading_zero: bool) -> PResult<'_, u8> {
    use nom::bytes::complete::{tag, take_while};
    use nom::Parser;

    let (rest, _) = tag::<_, _, PErr>(&b"<"[..])
        .parse(input)
        .or_else(|_| fail(input, "PRI missing"))?;
    let (after, digits) = take_while(|c: u8| c.is_ascii_digit()).parse(rest)?;
    if digits.is_empty() {
        return fail(rest, "PRIVAL not 1-3 digits");
    }
    if digits.len() > 3 {
        return fail(skip(rest, 3), "PRI malformed");
    }
    let (after, _) = tag::<_, _, PErr>(&b">"[..])
        .parse(after)
        .or_else(|_| fail(after, "PRI malformed"))?;
    let value = digits
        .iter()
        .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
    if value > 191 {
        return fail(rest, "PRI > 191");
    }
    if !leading_zero && digits.len() > 1 && digits[0] == b'0' {
        return fail(rest, "PRIVAL leading zero");
    }
    Ok((after, value as u8))
}

/// Index of the first octet of `hay` that is one of `needles` (1–3 of them), 8 octets at a time.
#[inline]
pub(crate) fn find_any(hay: &[u8], needles: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    let mut words = hay.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A zero octet in `x ^ splat(n)` is a match; the lowest flagged octet is exact.
        let mut hits = 0;
        for &n in needles {
            let y = x ^ (LO * u64::from(n));
            hits |= y.wrapping_sub(LO) & !y & HI;
        }
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    words
        .remainder()
        .iter()
        .position(|c| needles.contains(c))
        .map(|p| i + p)
}

/// Strips a leading UTF-8 BOM: `(msg, bom)`.
pub(crate) fn strip_bom(msg: &[u8]) -> (&[u8], bool) {
    match msg.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, true),
        None => (msg, false),
    }
}

#[cfg(test)]
mod tests;
