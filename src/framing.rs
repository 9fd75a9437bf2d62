//! Framing: cuts a TCP byte stream into syslog frames (RFC 6587).
//!
//! [`FrameDecoder`] is a `tokio_util::codec::Decoder` over `BytesMut` that yields [`Frame`]s whose
//! `data` is a zero-copy `Bytes` slice of the read buffer (`split_to(..).freeze()`).
//! Modes: octet counting (`MSG-LEN SP SYSLOG-MSG`), non-transparent (LF, CRLF) and `auto`,
//! which decides per frame (a digit starts an octet-counted frame, anything else a LF-terminated one).
//!
//! # Behaviour
//!
//! * **Octet counting.** `MSG-LEN = NONZERO-DIGIT *DIGIT`, then exactly one SP, then MSG-LEN
//!   octets, which are the frame's `data` (a LF counted in MSG-LEN, as PKS senders write it, stays
//!   in `data`). A bad header (`msg_len_not_digit`, `msg_len_zero`, `msg_len_leading_zero`,
//!   `msg_len_missing_sp`, or a run of more than 20 digits / a value over `u64`, reported as
//!   `frame_too_long`) yields a [`FrameKind::Error`] whose `data` holds the bad bytes from the
//!   frame start up to and including the next LF, at most `max_frame_bytes` of them; the decoder
//!   then resynchronises after that LF (bytes past the limit are skipped, not buffered).
//! * **Oversize octet frame** (MSG-LEN over `max_frame_bytes`): [`FrameKind::Truncated`] with
//!   `FrameTooLong` and the declared length; `data` is the first `max_frame_bytes` octets, the rest
//!   is skipped by count as it arrives, so the next frame is decoded normally.
//! * **Non-transparent** frames end at the [`Trailer`] (default [`Trailer::CrLf`]: LF ends the frame
//!   and one CR right before it is removed). A frame with no trailer within `max_frame_bytes` is
//!   [`FrameKind::Truncated`] with `FrameTooLong` and the first `max_frame_bytes` octets; the rest
//!   is skipped up to and including the next trailer. Empty frames (stray LF, CRLF alone, empty
//!   lines) are dropped; their bytes are reported in the next frame's [`Frame::dropped_before`].
//! * **Auto** classifies every frame by its first octet: `0`-`9` starts an octet-counted frame (so
//!   `0` and leading zeros are errors), anything else a non-transparent one. Two choices the RFC
//!   leaves open:
//!   - a leading SP (Cisco ASA) is *not* stripped: the frame is non-transparent and the SP stays in
//!     `data` (rsyslog's default, and what the conformance corpus expects);
//!   - NUL octets where a frame would start are dropped like empty frames (some senders pad or end
//!     octet-counted frames with NUL; read as the start of a LF frame, a NUL would swallow the next
//!     octet-counted frame). A NUL inside a frame is ordinary data (8-bit clean).
//! * **End of stream** ([`Decoder::decode_eof`]): nothing is lost. A partial octet frame is
//!   `Truncated { EofInFrame, Some(declared) }` with the octets that arrived (`FrameTooLong` if the
//!   declared length was over the limit); a partial MSG-LEN is `Error(EofInMsgLen)`; non-transparent
//!   data without trailer is `Truncated { EofWithoutTrailer, None }` with the bytes verbatim (a final
//!   CR without LF is kept: without the LF it is not a trailer); an oversize frame or an error that
//!   was being skipped is delivered with what was skipped so far.
//! * **Accounting.** Every input byte belongs to exactly one frame's wire span
//!   `offset .. offset + wire_len`, or to the dropped bytes right before a frame
//!   (`dropped_before`), or to the dropped bytes after the last frame
//!   ([`FrameDecoder::dropped_pending`]). A frame whose tail is skipped (oversize, or an error
//!   without LF within the limit) is delivered once the skip ends, so its `wire_len` is exact; it
//!   holds at most `max_frame_bytes` while the rest is discarded.
//! * **Memory.** The decoder never reserves or waits for more than `max_frame_bytes` plus a header
//!   (MSG-LEN is at most 20 digits and a SP) or a 2-octet trailer for one frame.
//! * The decoder never returns `Err`: framing errors are frames, the connection stays usable.

use std::mem;

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;
use tokio_util::codec::Decoder;

/// Default maximum SYSLOG-MSG size (64 KiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 65536;

/// Longest MSG-LEN accepted as a number: 20 digits cover `u64`; a 21st digit means the length is
/// over any limit and is reported as `frame_too_long` before a SP is seen.
const MAX_LEN_DIGITS: usize = 20;

/// How a listener (or `parse`) cuts its stream into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FramingMode {
    /// Per frame: a digit starts an octet-counted frame, anything else a LF-terminated one.
    #[default]
    Auto,
    /// RFC 6587 octet counting only.
    Octet,
    /// Non-transparent framing: LF (or CRLF) ends a frame.
    Lf,
}

/// What ends a non-transparent frame (in [`FramingMode::Lf`], and for the non-digit frames of
/// [`FramingMode::Auto`]). RFC 6587 §3.4.2 names LF and mentions NUL as a common alternative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum Trailer {
    /// LF ends the frame; one CR right before it is removed too (CRLF). The default.
    #[default]
    #[serde(rename = "crlf")]
    #[value(name = "crlf")]
    CrLf,
    /// LF ends the frame; a CR before it stays in the frame.
    #[serde(rename = "lf")]
    #[value(name = "lf")]
    Lf,
    /// NUL ends the frame; LF is ordinary data.
    #[serde(rename = "nul")]
    #[value(name = "nul")]
    Nul,
    /// LF or NUL ends the frame (syslog-ng's text transport); a CR stays in the frame.
    #[serde(rename = "lf-or-nul")]
    #[value(name = "lf-or-nul")]
    LfOrNul,
}

impl Trailer {
    /// The octet search and whether one CR before a LF is removed.
    fn parts(self) -> (Delim, bool) {
        match self {
            Trailer::CrLf => (Delim::Lf, true),
            Trailer::Lf => (Delim::Lf, false),
            Trailer::Nul => (Delim::Nul, false),
            Trailer::LfOrNul => (Delim::LfOrNul, false),
        }
    }
}

/// Why a frame is an error or was cut. The codes are those of the conformance corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// The frame does not start with a digit (octet mode).
    MsgLenNotDigit,
    /// MSG-LEN is `0`.
    MsgLenZero,
    /// MSG-LEN has a leading `0`.
    MsgLenLeadingZero,
    /// The digits are followed by something other than exactly one SP.
    MsgLenMissingSp,
    /// The stream ended inside MSG-LEN.
    EofInMsgLen,
    /// The stream ended before MSG-LEN octets arrived.
    EofInFrame,
    /// MSG-LEN (or a LF-terminated frame) is over the maximum frame size.
    FrameTooLong,
    /// Non-transparent data after the last trailer at EOF.
    EofWithoutTrailer,
}

impl FrameErrorKind {
    /// The stable code used in records, logs and `parse --frames` (`msg_len_zero`, ...).
    pub fn code(self) -> &'static str {
        match self {
            FrameErrorKind::MsgLenNotDigit => "msg_len_not_digit",
            FrameErrorKind::MsgLenZero => "msg_len_zero",
            FrameErrorKind::MsgLenLeadingZero => "msg_len_leading_zero",
            FrameErrorKind::MsgLenMissingSp => "msg_len_missing_sp",
            FrameErrorKind::EofInMsgLen => "eof_in_msg_len",
            FrameErrorKind::EofInFrame => "eof_in_frame",
            FrameErrorKind::FrameTooLong => "frame_too_long",
            FrameErrorKind::EofWithoutTrailer => "eof_without_trailer",
        }
    }
}

/// What a [`Frame`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A complete SYSLOG-MSG.
    Complete,
    /// A message that was cut: over the size limit (the rest was skipped) or by the end of the stream.
    /// `declared_length` is MSG-LEN when the frame was octet-counted.
    Truncated {
        /// Why it was cut.
        reason: FrameErrorKind,
        /// MSG-LEN as the sender declared it (octet counting only).
        declared_length: Option<u64>,
    },
    /// Bytes that do not form a frame (for example a bad MSG-LEN); `data` holds them (at most the
    /// frame limit) and the decoder resynchronised after the next LF.
    Error(FrameErrorKind),
}

impl FrameKind {
    /// The error or truncation reason, `None` for a complete frame.
    pub fn error(self) -> Option<FrameErrorKind> {
        match self {
            FrameKind::Complete => None,
            FrameKind::Truncated { reason, .. } => Some(reason),
            FrameKind::Error(kind) => Some(kind),
        }
    }
}

/// One unit cut from the stream: a message, a truncated message or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Stream offset of the frame's first byte (of MSG-LEN for octet counting).
    pub offset: u64,
    /// SYSLOG-MSG without MSG-LEN and without the LF/CRLF trailer; for [`FrameKind::Error`], the bad bytes.
    pub data: Bytes,
    /// Complete, truncated or error.
    pub kind: FrameKind,
    /// Number of stream bytes this frame covers, starting at `offset`: MSG-LEN and SP, the data,
    /// the trailer, and any bytes skipped after it (the rest of an oversize frame, the bytes up to
    /// and including the resynchronising LF after an error).
    pub wire_len: u64,
    /// Number of stream bytes right before `offset` that formed no frame and were dropped: empty
    /// non-transparent frames (stray LF, CRLF alone, empty lines) and, in `auto` mode, NUL octets
    /// between frames. The previous frame's span ends at `offset - dropped_before`.
    pub dropped_before: u64,
}

impl Frame {
    /// Stream offset just past this frame's span (`offset + wire_len`).
    pub fn end_offset(&self) -> u64 {
        self.offset + self.wire_len
    }
}

/// Which octet(s) end a non-transparent frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delim {
    Lf,
    Nul,
    LfOrNul,
}

impl Delim {
    fn find(self, hay: &[u8]) -> Option<usize> {
        match self {
            Delim::Lf => memchr::memchr(b'\n', hay),
            Delim::Nul => memchr::memchr(0, hay),
            Delim::LfOrNul => memchr::memchr2(b'\n', 0, hay),
        }
    }
}

/// Where the decoder is in the stream. `src[0]` is always the first byte not yet consumed.
#[derive(Debug)]
enum State {
    /// At a frame boundary (or inside a MSG-LEN that has not ended yet; it is re-read, at most
    /// 21 octets).
    Start,
    /// A valid MSG-LEN + SP (`header_len` octets) is at the start of `src`; waiting for the body.
    Octet { header_len: usize, len: u64 },
    /// A non-transparent frame starts at `src[0]`; `src[..scanned]` holds no trailer.
    Line { scanned: usize },
    /// A bad MSG-LEN starts at `src[0]`; `src[..scanned]` holds no LF.
    BadHeader {
        kind: FrameErrorKind,
        scanned: usize,
    },
    /// Skipping the rest of an oversize octet frame by count; `pending` is delivered at the end.
    SkipCount { remaining: u64, pending: Frame },
    /// Skipping up to and including the next delimiter; `pending` is delivered at the end.
    SkipTo { delim: Delim, pending: Frame },
}

/// Result of reading MSG-LEN SP at the start of a frame.
enum Header {
    NeedMore,
    Valid { header_len: usize, len: u64 },
    Bad(FrameErrorKind),
}

/// Reads `MSG-LEN SP` at the start of `buf` (which starts with a digit, or is an octet-mode frame).
fn parse_header(buf: &[u8]) -> Header {
    let Some(&first) = buf.first() else {
        return Header::NeedMore;
    };
    if !first.is_ascii_digit() {
        return Header::Bad(FrameErrorKind::MsgLenNotDigit);
    }
    if first == b'0' {
        return match buf.get(1) {
            None => Header::NeedMore,
            Some(b' ') => Header::Bad(FrameErrorKind::MsgLenZero),
            Some(b) if b.is_ascii_digit() => Header::Bad(FrameErrorKind::MsgLenLeadingZero),
            Some(_) => Header::Bad(FrameErrorKind::MsgLenMissingSp),
        };
    }
    let window = &buf[..buf.len().min(MAX_LEN_DIGITS + 1)];
    let digits = window
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(window.len());
    if digits > MAX_LEN_DIGITS {
        return Header::Bad(FrameErrorKind::FrameTooLong);
    }
    let Some(&term) = buf.get(digits) else {
        return Header::NeedMore;
    };
    if term != b' ' {
        return Header::Bad(FrameErrorKind::MsgLenMissingSp);
    }
    let mut len: u64 = 0;
    for &d in &buf[..digits] {
        match len
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
        {
            Some(v) => len = v,
            None => return Header::Bad(FrameErrorKind::FrameTooLong),
        }
    }
    Header::Valid {
        header_len: digits + 1,
        len,
    }
}

/// `tokio_util` decoder for octet-counted, LF-terminated or mixed streams. Never buffers more
/// than `max_frame_bytes` (plus a header) of one frame.
#[derive(Debug)]
pub struct FrameDecoder {
    mode: FramingMode,
    max_frame_bytes: usize,
    trailer: Trailer,
    state: State,
    /// Stream offset of `src[0]` (bytes consumed so far).
    offset: u64,
    /// Dropped bytes not yet reported in a frame's `dropped_before`.
    dropped: u64,
}

impl FrameDecoder {
    /// A decoder for `mode` that refuses frames over `max_frame_bytes` (at least 1; 0 is taken as 1).
    /// Non-transparent frames end with [`Trailer::CrLf`]; see [`FrameDecoder::with_trailer`].
    pub fn new(mode: FramingMode, max_frame_bytes: usize) -> Self {
        FrameDecoder {
            mode,
            max_frame_bytes: max_frame_bytes.max(1),
            trailer: Trailer::default(),
            state: State::Start,
            offset: 0,
            dropped: 0,
        }
    }

    /// The same decoder with another trailer for non-transparent frames.
    pub fn with_trailer(mut self, trailer: Trailer) -> Self {
        self.trailer = trailer;
        self
    }

    /// The framing mode.
    pub fn mode(&self) -> FramingMode {
        self.mode
    }

    /// The frame size limit.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The trailer of non-transparent frames.
    pub fn trailer(&self) -> Trailer {
        self.trailer
    }

    /// Stream bytes consumed so far (the stream offset of the first byte still in the buffer).
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }

    /// Dropped bytes (empty frames, NUL padding) consumed since the last frame was yielded. After
    /// EOF, these are the dropped bytes after the last frame.
    pub fn dropped_pending(&self) -> u64 {
        self.dropped
    }

    /// Cuts a whole captured stream into frames (one copy of the stream; the frames are slices of it).
    pub fn decode_all(&mut self, stream: Bytes) -> Vec<Frame> {
        let mut buf = BytesMut::from(&stream[..]);
        let mut frames = Vec::new();
        while let Some(frame) = self.step(&mut buf) {
            frames.push(frame);
        }
        while let Some(frame) = self.finish(&mut buf) {
            frames.push(frame);
        }
        frames
    }

    /// Builds a frame at `offset`, taking the pending dropped bytes.
    fn frame(&mut self, offset: u64, data: Bytes, wire_len: usize, kind: FrameKind) -> Frame {
        Frame {
            offset,
            data,
            kind,
            wire_len: wire_len as u64,
            dropped_before: mem::take(&mut self.dropped),
        }
    }

    /// Consumes `n` bytes that form no frame.
    fn drop_bytes(&mut self, src: &mut BytesMut, n: usize) {
        src.advance(n);
        self.offset += n as u64;
        self.dropped += n as u64;
    }

    /// Splits the next `wire` bytes off `src` as one frame whose data is their first `data_len`
    /// bytes after the first `header` bytes.
    fn take(&mut self, src: &mut BytesMut, header: usize, data_len: usize, wire: usize) -> Bytes {
        let mut chunk = src.split_to(wire);
        chunk.advance(header);
        chunk.truncate(data_len);
        self.offset += wire as u64;
        chunk.freeze()
    }

    /// Decodes as far as the buffered bytes allow (no EOF handling).
    fn step(&mut self, src: &mut BytesMut) -> Option<Frame> {
        let max = self.max_frame_bytes;
        loop {
            match mem::replace(&mut self.state, State::Start) {
                State::Start => {
                    let first = *src.first()?;
                    let octet = match self.mode {
                        FramingMode::Octet => true,
                        FramingMode::Lf => false,
                        FramingMode::Auto => {
                            if first == 0 {
                                let n = src.iter().position(|&b| b != 0).unwrap_or(src.len());
                                self.drop_bytes(src, n);
                                continue;
                            }
                            first.is_ascii_digit()
                        }
                    };
                    if !octet {
                        self.state = State::Line { scanned: 0 };
                        continue;
                    }
                    match parse_header(src) {
                        Header::NeedMore => return None,
                        Header::Valid { header_len, len } => {
                            self.state = State::Octet { header_len, len }
                        }
                        Header::Bad(kind) => self.state = State::BadHeader { kind, scanned: 0 },
                    }
                }
                State::Octet { header_len, len } => {
                    // `body <= max`, so this never reserves more than header + max.
                    let body = len.min(max as u64) as usize;
                    let need = header_len + body;
                    if src.len() < need {
                        src.reserve(need - src.len());
                        self.state = State::Octet { header_len, len };
                        return None;
                    }
                    let offset = self.offset;
                    let data = self.take(src, header_len, body, need);
                    if len <= max as u64 {
                        return Some(self.frame(offset, data, need, FrameKind::Complete));
                    }
                    let kind = FrameKind::Truncated {
                        reason: FrameErrorKind::FrameTooLong,
                        declared_length: Some(len),
                    };
                    let pending = self.frame(offset, data, need, kind);
                    self.state = State::SkipCount {
                        remaining: len - max as u64,
                        pending,
                    };
                }
                State::Line { scanned } => {
                    let (delim, strip_cr) = self.trailer.parts();
                    // A trailer at index `max` (or `max + 1` after a CR) still ends a frame
                    // of at most `max` octets.
                    let window = max.saturating_add(if strip_cr { 2 } else { 1 });
                    let limit = src.len().min(window);
                    let scanned = scanned.min(limit);
                    let Some(i) = delim.find(&src[scanned..limit]) else {
                        if src.len() < window {
                            self.state = State::Line { scanned: limit };
                            return None;
                        }
                        let offset = self.offset;
                        let data = self.take(src, 0, max, max);
                        let kind = FrameKind::Truncated {
                            reason: FrameErrorKind::FrameTooLong,
                            declared_length: None,
                        };
                        let pending = self.frame(offset, data, max, kind);
                        self.state = State::SkipTo { delim, pending };
                        continue;
                    };
                    let end = scanned + i;
                    let wire = end + 1;
                    let mut data_len = end;
                    if strip_cr && end > 0 && src[end - 1] == b'\r' {
                        data_len -= 1;
                    }
                    if data_len == 0 {
                        self.drop_bytes(src, wire);
                        continue;
                    }
                    let offset = self.offset;
                    let kind = if data_len > max {
                        data_len = max;
                        FrameKind::Truncated {
                            reason: FrameErrorKind::FrameTooLong,
                            declared_length: None,
                        }
                    } else {
                        FrameKind::Complete
                    };
                    let data = self.take(src, 0, data_len, wire);
                    return Some(self.frame(offset, data, wire, kind));
                }
                State::BadHeader { kind, scanned } => {
                    let limit = src.len().min(max);
                    let scanned = scanned.min(limit);
                    let offset = self.offset;
                    match memchr::memchr(b'\n', &src[scanned..limit]) {
                        Some(i) => {
                            let wire = scanned + i + 1;
                            let data = self.take(src, 0, wire, wire);
                            return Some(self.frame(offset, data, wire, FrameKind::Error(kind)));
                        }
                        None if src.len() >= max => {
                            let data = self.take(src, 0, max, max);
                            let pending = self.frame(offset, data, max, FrameKind::Error(kind));
                            self.state = State::SkipTo {
                                delim: Delim::Lf,
                                pending,
                            };
                        }
                        None => {
                            self.state = State::BadHeader {
                                kind,
                                scanned: limit,
                            };
                            return None;
                        }
                    }
                }
                State::SkipCount {
                    remaining,
                    mut pending,
                } => {
                    let n = remaining.min(src.len() as u64);
                    // `n <= src.len()`, so the cast is lossless.
                    src.advance(n as usize);
                    self.offset += n;
                    pending.wire_len += n;
                    if n == remaining {
                        return Some(pending);
                    }
                    self.state = State::SkipCount {
                        remaining: remaining - n,
                        pending,
                    };
                    return None;
                }
                State::SkipTo { delim, mut pending } => match delim.find(src) {
                    Some(i) => {
                        src.advance(i + 1);
                        self.offset += (i + 1) as u64;
                        pending.wire_len += (i + 1) as u64;
                        return Some(pending);
                    }
                    None => {
                        let n = src.len() as u64;
                        src.clear();
                        self.offset += n;
                        pending.wire_len += n;
                        self.state = State::SkipTo { delim, pending };
                        return None;
                    }
                },
            }
        }
    }

    /// At EOF, after [`FrameDecoder::step`] returned `None`: delivers what is left.
    fn finish(&mut self, src: &mut BytesMut) -> Option<Frame> {
        if let Some(frame) = self.step(src) {
            return Some(frame);
        }
        let max = self.max_frame_bytes;
        let wire = src.len();
        let offset = self.offset;
        match mem::replace(&mut self.state, State::Start) {
            State::Start => {
                if src.is_empty() {
                    return None;
                }
                let data = self.take(src, 0, wire.min(max), wire);
                Some(self.frame(
                    offset,
                    data,
                    wire,
                    FrameKind::Error(FrameErrorKind::EofInMsgLen),
                ))
            }
            State::Octet { header_len, len } => {
                let reason = if len > max as u64 {
                    FrameErrorKind::FrameTooLong
                } else {
                    FrameErrorKind::EofInFrame
                };
                let data = self.take(src, header_len, wire - header_len, wire);
                let kind = FrameKind::Truncated {
                    reason,
                    declared_length: Some(len),
                };
                Some(self.frame(offset, data, wire, kind))
            }
            State::Line { .. } => {
                let reason = if wire > max {
                    FrameErrorKind::FrameTooLong
                } else {
                    FrameErrorKind::EofWithoutTrailer
                };
                let data = self.take(src, 0, wire.min(max), wire);
                let kind = FrameKind::Truncated {
                    reason,
                    declared_length: None,
                };
                Some(self.frame(offset, data, wire, kind))
            }
            State::BadHeader { kind, .. } => {
                let data = self.take(src, 0, wire.min(max), wire);
                Some(self.frame(offset, data, wire, FrameKind::Error(kind)))
            }
            State::SkipCount { pending, .. } | State::SkipTo { pending, .. } => Some(pending),
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        Ok(self.step(src))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        Ok(self.finish(src))
    }
}

/// Cuts a whole captured stream into frames (the offline `parse` command and tests).
pub fn decode_all(mode: FramingMode, max_frame_bytes: usize, stream: Bytes) -> Vec<Frame> {
    FrameDecoder::new(mode, max_frame_bytes).decode_all(stream)
}
