//! Parse: RFC 5424 (and RFC 3164 as a fallback) into a [`Message`] that borrows from the frame.
//!
//! The parser is written with `nom` over `&[u8]` and does not allocate: header fields are `&str`
//! slices of the frame, STRUCTURED-DATA is validated once and then walked lazily, and escaped
//! PARAM-VALUEs are resolved only when someone asks ([`ParamValue::chunks`] writes them without
//! allocating).

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;

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

    /// The timestamp as a date-time (RFC 5424 only), `None` for NILVALUE.
    pub fn timestamp_parsed(&self) -> Option<DateTime<FixedOffset>> {
        todo!()
    }
}

/// Validated STRUCTURED-DATA, walked lazily.
#[derive(Debug, Clone, Copy)]
pub struct StructuredData<'a> {
    raw: &'a [u8],
}

impl<'a> StructuredData<'a> {
    /// The SD-ELEMENTs in order.
    pub fn elements(&self) -> impl Iterator<Item = Element<'a>> + 'a {
        let _ = self.raw;
        std::iter::empty()
    }

    /// The first element whose SD-ID is `id`.
    pub fn element(&self, id: &str) -> Option<Element<'a>> {
        self.elements().find(|e| e.id == id)
    }
}

/// One SD-ELEMENT.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// SD-ID.
    pub id: &'a str,
    params_raw: &'a [u8],
}

impl<'a> Element<'a> {
    /// The SD-PARAMs in order (names may repeat).
    pub fn params(&self) -> impl Iterator<Item = (&'a str, ParamValue<'a>)> + 'a {
        let _ = self.params_raw;
        std::iter::empty()
    }

    /// The value of the first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<ParamValue<'a>> {
        self.params().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// A PARAM-VALUE as sent (escapes `\"` `\\` `\]` not yet resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamValue<'a> {
    raw: &'a str,
}

impl<'a> ParamValue<'a> {
    /// The value as it stands on the wire.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The unescaped value as pieces (no allocation): `a\"b` gives `a`, `"b`.
    pub fn chunks(&self) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::once(self.raw)
    }

    /// The unescaped value; borrows unless the value holds an escape.
    pub fn unescaped(&self) -> Cow<'a, str> {
        todo!()
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
pub fn parse(frame: &[u8], format: Format) -> Result<Message<'_>, ParseError> {
    let _ = (frame, format);
    todo!()
}
