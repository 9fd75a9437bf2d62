//! RFC 3164 (BSD syslog) as Linux `logger`, rsyslog and network gear send it, mapped onto
//! [`Message`].

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while_m_n};
use nom::Parser;

use super::{
    err, fail, pri, rfc5424, skip, strip_bom, to_error, Message, PResult, ParseError, Protocol,
};

/// Parses `frame` as RFC 3164.
pub(crate) fn parse(frame: &[u8]) -> Result<Message<'_>, ParseError> {
    message(frame).map_err(|e| to_error(frame, e))
}

fn message(input: &[u8]) -> Result<Message<'_>, nom::Err<super::PErr<'_>>> {
    let (i, pri) = pri(input, true)?;
    let (i, timestamp) = match bsd_timestamp(i).or_else(|_| rfc3339_timestamp(i)) {
        Ok(ok) => ok,
        Err(_) => return Err(err(i, "TIMESTAMP expected (Mmm dd hh:mm:ss or RFC 3339)")),
    };
    let mut m = Message {
        protocol: Protocol::Rfc3164,
        pri,
        version: None,
        timestamp: Some(timestamp),
        parsed_ts: None,
        hostname: None,
        app_name: None,
        procid: None,
        msgid: None,
        structured_data: None,
        msg: None,
        bom: false,
    };
    let i = match i.split_first() {
        None => return Ok(m),
        Some((b' ', rest)) => rest,
        Some(_) => return Err(err(i, "SP expected after TIMESTAMP")),
    };
    let (i, hostname) = match word(i) {
        // A word that is not a TAG and is followed by more: the HOSTNAME.
        Some((w, Some(rest))) if tag_word(w).is_none() => (rest, Some(w)),
        _ => (i, None),
    };
    m.hostname = hostname;
    let i = match word(i) {
        Some((w, rest)) => match tag_word(w) {
            Some((tag, pid)) => {
                m.app_name = Some(tag);
                m.procid = pid;
                rest.unwrap_or_default()
            }
            None => i,
        },
        None => i,
    };
    let (msg, bom) = strip_bom(i);
    m.msg = Some(msg);
    m.bom = bom;
    Ok(m)
}

/// The PRINTUSASCII word at the start of `i` (as `&str`) and what follows its SP (`None` when the
/// input ends with the word); `None` when `i` does not start with such a word.
fn word(i: &[u8]) -> Option<(&str, Option<&[u8]>)> {
    let run = i.iter().position(|&c| c == b' ').unwrap_or(i.len());
    let w = &i[..run];
    if w.is_empty() || !w.iter().all(|c| (33..=126).contains(c)) {
        return None;
    }
    let w = std::str::from_utf8(w).ok()?;
    Some((w, i.get(run + 1..)))
}

/// A TAG word: `TAG:` or `TAG[PID]:`; gives (TAG, PID).
fn tag_word(w: &str) -> Option<(&str, Option<&str>)> {
    let w = w.strip_suffix(':')?;
    let (tag, pid) = match w.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
        Some((tag, pid)) => (tag, (!pid.is_empty()).then_some(pid)),
        None => (w, None),
    };
    (!tag.is_empty()).then_some((tag, pid))
}

/// `Mmm dd hh:mm:ss` (day zero- or space-padded, or one digit), checked for range.
fn bsd_timestamp(i: &[u8]) -> PResult<'_, &str> {
    let digit2 = || take_while_m_n(2, 2, |c: u8| c.is_ascii_digit());
    let (rest, _month) = alt((
        tag(&b"Jan"[..]),
        tag(&b"Feb"[..]),
        tag(&b"Mar"[..]),
        tag(&b"Apr"[..]),
        tag(&b"May"[..]),
        tag(&b"Jun"[..]),
        tag(&b"Jul"[..]),
        tag(&b"Aug"[..]),
        tag(&b"Sep"[..]),
        tag(&b"Oct"[..]),
        tag(&b"Nov"[..]),
        tag(&b"Dec"[..]),
    ))
    .parse(i)?;
    let (rest, day) = alt((
        (
            tag(&b"  "[..]),
            take_while_m_n(1, 1, |c: u8| c.is_ascii_digit()),
        )
            .map(|t| t.1),
        (
            tag(&b" "[..]),
            take_while_m_n(1, 2, |c: u8| c.is_ascii_digit()),
        )
            .map(|t| t.1),
    ))
    .parse(rest)?;
    let (rest, (_, h, _, m, _, s)) = (
        tag(&b" "[..]),
        digit2(),
        tag(&b":"[..]),
        digit2(),
        tag(&b":"[..]),
        digit2(),
    )
        .parse(rest)?;
    let num = |d: &[u8]| d.iter().fold(0u32, |v, &c| v * 10 + u32::from(c - b'0'));
    if !(1..=31).contains(&num(day)) || num(h) > 23 || num(m) > 59 || num(s) > 60 {
        return fail(i, "BSD TIMESTAMP out of range");
    }
    let len = i.len() - rest.len();
    match std::str::from_utf8(&i[..len]) {
        Ok(ts) => Ok((rest, ts)),
        Err(_) => fail(i, "BSD TIMESTAMP malformed"),
    }
}

/// An RFC 3339 timestamp (as rsyslog's `RSYSLOG_ForwardFormat` sends), up to SP.
fn rfc3339_timestamp(i: &[u8]) -> PResult<'_, &str> {
    let len = i.iter().position(|&c| c == b' ').unwrap_or(i.len());
    let tok = &i[..len];
    if rfc5424::timestamp(tok, 9).is_err() {
        return fail(i, "RFC 3339 TIMESTAMP malformed");
    }
    match std::str::from_utf8(tok) {
        Ok(ts) => Ok((skip(i, len), ts)),
        Err(_) => fail(i, "RFC 3339 TIMESTAMP malformed"),
    }
}
