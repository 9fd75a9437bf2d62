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
    /// Every kind, in [`FrameErrorKind::index`] order. Append only: the index is also the code
    /// the disk buffer stores on disk.
    pub const ALL: [FrameErrorKind; 8] = [
        FrameErrorKind::MsgLenNotDigit,
        FrameErrorKind::MsgLenZero,
        FrameErrorKind::MsgLenLeadingZero,
        FrameErrorKind::MsgLenMissingSp,
        FrameErrorKind::EofInMsgLen,
        FrameErrorKind::EofInFrame,
        FrameErrorKind::FrameTooLong,
        FrameErrorKind::EofWithoutTrailer,
    ];

    /// The position of this kind in [`FrameErrorKind::ALL`].
    pub fn index(self) -> usize {
        match self {
            FrameErrorKind::MsgLenNotDigit => 0,
            FrameErrorKind::MsgLenZero => 1,
            FrameErrorKind::MsgLenLeadingZero => 2,
            FrameErrorKind::MsgLenMissingSp => 3,
            FrameErrorKind::EofInMsgLen => 4,
            FrameErrorKind::EofInFrame => 5,
            FrameErrorKind::FrameTooLong => 6,
            FrameErrorKind::EofWithoutTrailer => 7,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_index_is_its_place_in_all() {
        for (i, k) in FrameErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }

    const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

    fn truncated(reason: FrameErrorKind, declared_length: Option<u64>) -> FrameKind {
        FrameKind::Truncated {
            reason,
            declared_length,
        }
    }

    /// Feeds `input` in chunks of `chunk` bytes, as `Framed` does, then EOF.
    fn run_chunked(mut dec: FrameDecoder, input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = dec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty(), "bytes left after EOF");
        out
    }

    /// Decodes whole, and in 1-byte and 7-byte chunks; all must agree and tile the input.
    fn run_with(dec: impl Fn() -> FrameDecoder, input: &[u8]) -> Vec<Frame> {
        let whole = dec().decode_all(Bytes::copy_from_slice(input));
        for chunk in [1, 7] {
            assert_eq!(
                run_chunked(dec(), input, chunk),
                whole,
                "chunk size {chunk}"
            );
        }
        let mut end = 0;
        for f in &whole {
            assert_eq!(
                f.offset - f.dropped_before,
                end,
                "spans not contiguous: {f:?}"
            );
            assert!(f.data.len() <= dec().max_frame_bytes());
            end = f.end_offset();
        }
        assert!(end <= input.len() as u64);
        whole
    }

    fn run(mode: FramingMode, max: usize, input: &[u8]) -> Vec<Frame> {
        run_with(|| FrameDecoder::new(mode, max), input)
    }

    fn summary(frames: &[Frame]) -> Vec<(FrameKind, &[u8])> {
        frames.iter().map(|f| (f.kind, &f.data[..])).collect()
    }

    #[test]
    fn codes() {
        use FrameErrorKind::*;
        let all = [
            (MsgLenNotDigit, "msg_len_not_digit"),
            (MsgLenZero, "msg_len_zero"),
            (MsgLenLeadingZero, "msg_len_leading_zero"),
            (MsgLenMissingSp, "msg_len_missing_sp"),
            (EofInMsgLen, "eof_in_msg_len"),
            (EofInFrame, "eof_in_frame"),
            (FrameTooLong, "frame_too_long"),
            (EofWithoutTrailer, "eof_without_trailer"),
        ];
        for (kind, code) in all {
            assert_eq!(kind.code(), code);
        }
    }

    #[test]
    fn octet_back_to_back_and_offsets() {
        let f = run(FramingMode::Octet, MAX, b"5 hello3 abc10 0123456789");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"hello"[..]),
                (FrameKind::Complete, b"abc"),
                (FrameKind::Complete, b"0123456789"),
            ]
        );
        assert_eq!(
            f.iter().map(|f| (f.offset, f.wire_len)).collect::<Vec<_>>(),
            vec![(0, 7), (7, 5), (12, 13)]
        );
    }

    #[test]
    fn octet_pks_trailing_lf_is_kept() {
        for mode in [FramingMode::Octet, FramingMode::Auto] {
            let f = run(mode, MAX, b"6 hello\n6 world\n");
            assert_eq!(
                summary(&f),
                vec![
                    (FrameKind::Complete, &b"hello\n"[..]),
                    (FrameKind::Complete, b"world\n")
                ]
            );
        }
    }

    #[test]
    fn octet_data_is_zero_copy_slice_of_buffer() {
        let mut dec = FrameDecoder::new(FramingMode::Octet, MAX);
        let mut buf = BytesMut::from(&b"5 hello"[..]);
        let base = buf.as_ptr() as usize;
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.data.as_ptr() as usize, base + 2);
        let mut buf = BytesMut::from(&b"hello\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let mut dec = FrameDecoder::new(FramingMode::Lf, MAX);
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.data.as_ptr() as usize, base);
        assert_eq!(&f.data[..], b"hello");
    }

    #[test]
    fn huge_declared_length_then_eof_does_not_allocate() {
        let mut dec = FrameDecoder::new(FramingMode::Octet, MAX);
        let mut buf = BytesMut::from(&b"999999999999 "[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= MAX + 64,
            "capacity {} after a hostile MSG-LEN",
            buf.capacity()
        );
        let f = dec.decode_eof(&mut buf).unwrap().unwrap();
        assert_eq!(
            f.kind,
            truncated(FrameErrorKind::FrameTooLong, Some(999_999_999_999))
        );
        assert!(f.data.is_empty());
        assert_eq!(f.wire_len, 13);
        assert!(dec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn huge_declared_length_skips_by_count_without_buffering() {
        // 1 MiB of body with a 1 KiB limit, fed in 4 KiB reads: the buffer never grows.
        let max = 1024;
        let body = 1 << 20;
        let mut input = format!("{body} ").into_bytes();
        input.extend_from_slice(&vec![b'x'; body]);
        input.extend_from_slice(b"5 hello");
        let mut dec = FrameDecoder::new(FramingMode::Octet, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(4096) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            assert!(buf.len() <= max + 32, "buffered {}", buf.len());
        }
        assert!(dec.decode_eof(&mut buf).unwrap().is_none());
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].kind,
            truncated(FrameErrorKind::FrameTooLong, Some(body as u64))
        );
        assert_eq!(out[0].data.len(), max);
        assert_eq!(out[0].wire_len, 8 + body as u64);
        assert_eq!(
            (out[1].kind, &out[1].data[..]),
            (FrameKind::Complete, &b"hello"[..])
        );
        assert_eq!(out[1].offset, 8 + body as u64);
    }

    #[test]
    fn oversize_then_normal_frame_stays_in_sync() {
        let f = run(FramingMode::Octet, 4, b"10 0123456789\n3 abc");
        assert_eq!(
            summary(&f),
            vec![
                (
                    truncated(FrameErrorKind::FrameTooLong, Some(10)),
                    &b"0123"[..]
                ),
                (FrameKind::Error(FrameErrorKind::MsgLenNotDigit), b"\n"),
                (FrameKind::Complete, b"abc"),
            ]
        );
        assert_eq!(f[0].wire_len, 13);
        let f = run(FramingMode::Auto, 4, b"10 0123456789<1>x\n");
        assert_eq!(
            summary(&f),
            vec![
                (
                    truncated(FrameErrorKind::FrameTooLong, Some(10)),
                    &b"0123"[..]
                ),
                (FrameKind::Complete, b"<1>x"),
            ]
        );
    }

    #[test]
    fn octet_limit_is_inclusive() {
        let f = run(FramingMode::Octet, 4, b"4 abcd5 abcde");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"abcd"[..]),
                (truncated(FrameErrorKind::FrameTooLong, Some(5)), b"abcd"),
            ]
        );
        assert_eq!(f[1].wire_len, 7);
    }

    #[test]
    fn hundred_kib_of_digits() {
        let max = MAX;
        let mut input = vec![b'7'; 100 * 1024];
        input.extend_from_slice(b"\n5 hello");
        let mut dec = FrameDecoder::new(FramingMode::Octet, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(1000) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            assert!(buf.capacity() <= 2 * (max + 1000), "cap {}", buf.capacity());
        }
        while let Some(f) = dec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, FrameKind::Error(FrameErrorKind::FrameTooLong));
        assert_eq!(out[0].data.len(), max);
        assert_eq!(out[0].wire_len, 100 * 1024 + 1);
        assert_eq!(&out[1].data[..], b"hello");
        // Also in Auto, and a 21-digit run is rejected before the SP arrives.
        let f = run(FramingMode::Auto, MAX, b"123456789012345678901");
        assert_eq!(
            summary(&f),
            vec![(
                FrameKind::Error(FrameErrorKind::FrameTooLong),
                &b"123456789012345678901"[..]
            )]
        );
        // 20 digits over u64::MAX.
        let f = run(FramingMode::Octet, MAX, b"99999999999999999999 x\n");
        assert_eq!(f[0].kind, FrameKind::Error(FrameErrorKind::FrameTooLong));
    }

    #[test]
    fn bad_headers_resync_after_lf() {
        use FrameErrorKind::*;
        let cases: [(&[u8], FrameErrorKind, &[u8]); 6] = [
            (b"0 abc\n", MsgLenZero, b"0 abc\n"),
            (b"016 abc\n", MsgLenLeadingZero, b"016 abc\n"),
            (b"000002 ab\n", MsgLenLeadingZero, b"000002 ab\n"),
            (b"5\thello\n", MsgLenMissingSp, b"5\thello\n"),
            (b"0x10 y\n", MsgLenMissingSp, b"0x10 y\n"),
            (b"x16 <1>\n", MsgLenNotDigit, b"x16 <1>\n"),
        ];
        for (bad, kind, data) in cases {
            let mut input = bad.to_vec();
            input.extend_from_slice(b"3 abc");
            let f = run(FramingMode::Octet, MAX, &input);
            assert_eq!(
                summary(&f),
                vec![
                    (FrameKind::Error(kind), data),
                    (FrameKind::Complete, b"abc")
                ],
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bad_header_without_lf_is_bounded_and_skipped() {
        let f = run(FramingMode::Octet, 8, b"12xabcdefghijklmnop\n3 abc");
        assert_eq!(
            summary(&f),
            vec![
                (
                    FrameKind::Error(FrameErrorKind::MsgLenMissingSp),
                    &b"12xabcde"[..]
                ),
                (FrameKind::Complete, b"abc"),
            ]
        );
        assert_eq!(f[0].wire_len, 20);
        // No LF at all before EOF: the error is delivered with everything skipped.
        let f = run(FramingMode::Octet, 8, b"12xabcdefghijklmnop");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data.len(), 8);
        assert_eq!(f[0].wire_len, 19);
        // Short bad bytes at EOF.
        let f = run(FramingMode::Octet, 8, b"5  hello");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b" hell"[..]),
                (FrameKind::Error(FrameErrorKind::MsgLenNotDigit), b"o"),
            ]
        );
    }

    #[test]
    fn eof_cases() {
        use FrameErrorKind::*;
        let f = run(FramingMode::Octet, MAX, b"16 <1>1");
        assert_eq!(
            summary(&f),
            vec![(truncated(EofInFrame, Some(16)), &b"<1>1"[..])]
        );
        assert_eq!(f[0].wire_len, 7);
        let f = run(FramingMode::Octet, MAX, b"3 abc12");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"abc"[..]),
                (FrameKind::Error(EofInMsgLen), b"12")
            ]
        );
        let f = run(FramingMode::Auto, MAX, b"0");
        assert_eq!(
            summary(&f),
            vec![(FrameKind::Error(EofInMsgLen), &b"0"[..])]
        );
        let f = run(FramingMode::Lf, MAX, b"a\nbc\r");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"a"[..]),
                (truncated(EofWithoutTrailer, None), b"bc\r")
            ]
        );
        assert!(run(FramingMode::Auto, MAX, b"").is_empty());
        // Oversize declared length cut by EOF keeps its FrameTooLong reason.
        let f = run(FramingMode::Octet, 4, b"8193 AAAAAA");
        assert_eq!(
            summary(&f),
            vec![(truncated(FrameTooLong, Some(8193)), &b"AAAA"[..])]
        );
        assert_eq!(f[0].wire_len, 11);
    }

    #[test]
    fn split_one_byte_per_call() {
        let input = b"16 <1>1 - - - - - -<2>1 - - - - - -\r\n27 <3>1 - - - - - - multi\nline";
        let f = run_chunked(FrameDecoder::new(FramingMode::Auto, MAX), input, 1);
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"<1>1 - - - - - -"[..]),
                (FrameKind::Complete, b"<2>1 - - - - - -"),
                (FrameKind::Complete, b"<3>1 - - - - - - multi\nline"),
            ]
        );
    }

    #[test]
    fn auto_mixed_octet_and_lf() {
        let f = run(
            FramingMode::Auto,
            MAX,
            b"5 hello<1>lf frame\n3 abc\n\r\nplain\n",
        );
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"hello"[..]),
                (FrameKind::Complete, b"<1>lf frame"),
                (FrameKind::Complete, b"abc"),
                (FrameKind::Complete, b"plain"),
            ]
        );
        assert_eq!(f[3].dropped_before, 3);
        assert_eq!(f[3].offset, 27);
    }

    #[test]
    fn crlf_and_other_trailers() {
        let input = b"one\r\ntwo\nthree\r\r\n";
        let f = run(FramingMode::Lf, MAX, input);
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"one"[..]),
                (FrameKind::Complete, b"two"),
                (FrameKind::Complete, b"three\r"),
            ]
        );
        let lf = |t| move || FrameDecoder::new(FramingMode::Lf, MAX).with_trailer(t);
        let f = run_with(lf(Trailer::Lf), input);
        assert_eq!(&f[0].data[..], b"one\r");
        let f = run_with(lf(Trailer::Nul), b"a\nb\0c\0");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"a\nb"[..]),
                (FrameKind::Complete, b"c")
            ]
        );
        let f = run_with(lf(Trailer::LfOrNul), b"a\nb\0c");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"a"[..]),
                (FrameKind::Complete, b"b"),
                (truncated(FrameErrorKind::EofWithoutTrailer, None), b"c"),
            ]
        );
    }

    #[test]
    fn empty_lf_frames_are_dropped_but_accounted() {
        let input = b"\n\r\n\nabc\n\n";
        let mut dec = FrameDecoder::new(FramingMode::Lf, MAX);
        let f = dec.decode_all(Bytes::from_static(input));
        assert_eq!(summary(&f), vec![(FrameKind::Complete, &b"abc"[..])]);
        assert_eq!((f[0].offset, f[0].dropped_before, f[0].wire_len), (4, 4, 4));
        assert_eq!(dec.dropped_pending(), 1);
        assert_eq!(dec.stream_offset(), input.len() as u64);
    }

    #[test]
    fn lf_oversize_is_truncated_then_skipped_to_lf() {
        let f = run(FramingMode::Lf, 4, b"0123456789\nok\n");
        assert_eq!(
            summary(&f),
            vec![
                (truncated(FrameErrorKind::FrameTooLong, None), &b"0123"[..]),
                (FrameKind::Complete, b"ok"),
            ]
        );
        assert_eq!(f[0].wire_len, 11);
        // Exactly max octets plus CRLF is not oversize; max + 1 is.
        let f = run(FramingMode::Lf, 4, b"0123\r\n01234\r\n");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"0123"[..]),
                (truncated(FrameErrorKind::FrameTooLong, None), b"0123"),
            ]
        );
        // No LF ever: bounded buffer, delivered at EOF.
        let f = run(FramingMode::Lf, 4, b"0123456789");
        assert_eq!(
            summary(&f),
            vec![(truncated(FrameErrorKind::FrameTooLong, None), &b"0123"[..])]
        );
        assert_eq!(f[0].wire_len, 10);
    }

    #[test]
    fn auto_leading_space_and_nul() {
        // Cisco ASA: the SP is not a digit, so the frame is LF-terminated and keeps its SP.
        let f = run(FramingMode::Auto, MAX, b"<1>a\n 5 hello\n");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"<1>a"[..]),
                (FrameKind::Complete, b" 5 hello"),
            ]
        );
        // NUL padding between frames is dropped in Auto, kept as data in Lf.
        let f = run(FramingMode::Auto, MAX, b"5 hello\0\x005 world\0");
        assert_eq!(
            summary(&f),
            vec![
                (FrameKind::Complete, &b"hello"[..]),
                (FrameKind::Complete, b"world"),
            ]
        );
        assert_eq!(f[1].dropped_before, 2);
        let f = run(FramingMode::Lf, MAX, b"\0a\0b\n");
        assert_eq!(summary(&f), vec![(FrameKind::Complete, &b"\0a\0b"[..])]);
    }

    #[test]
    fn partial_lf_frame_is_not_rescanned() {
        let mut dec = FrameDecoder::new(FramingMode::Lf, MAX);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(dec.state, State::Line { scanned: 6 }));
        buf.extend_from_slice(b"gh");
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(dec.state, State::Line { scanned: 8 }));
        buf.extend_from_slice(b"\n");
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.data[..], b"abcdefgh");
    }

    #[test]
    fn octet_reserves_at_most_the_frame() {
        let mut dec = FrameDecoder::new(FramingMode::Octet, MAX);
        let mut buf = BytesMut::from(&b"1000 x"[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= 1005);
        assert!(buf.capacity() <= MAX);
    }
}
