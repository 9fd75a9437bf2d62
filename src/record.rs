//! Record: turns one [`Frame`] into one JSON object (one line), the product's contract with SIEMs.
//!
//! Keys, in this order: `received_at`, `peer`, `peer_cert` (only on TLS listeners that verify
//! client certificates: the client certificate's subject CN, or its first DNS SAN when it has
//! no CN), `facility`, `severity`, `version`, `timestamp`,
//! `hostname`, `app_name`, `procid`, `msgid`, `structured_data`, `message`, `message_base64`
//! (only when MSG is not UTF-8), `k8s` (only for Kubernetes records), then, when they apply,
//! `parse_error` + `raw` (+ `raw_base64`), `framing_error` + `raw`, `truncated` + `truncation` +
//! `declared_length`. The README documents each key.
//!
//! The encoder parses, classifies and writes straight into the batch's output buffer: nothing
//! per message is allocated on the happy path.

use bytes::{BufMut, BytesMut};

use crate::classify::{Category, Classifier, K8sInfo, K8sKind, SdValuesBuilder, SD_ID};
use crate::framing::{Frame, FrameKind};
use crate::metrics::BatchCounts;
use crate::parse::{self, Format, Message, ParamValue, StructuredData};

/// The buffer a record is written into, and the addresses of its frame's octets that need no
/// JSON escape (those before the first `"`, `\` or control), so that fields borrowed from there
/// are copied without a scan.
#[derive(Debug)]
pub struct Out<'o> {
    buf: &'o mut BytesMut,
    /// Address range (of the frame being encoded) known to need no escape; empty for none.
    clean: std::ops::Range<usize>,
    /// Address range of the frame without `\\` or controls (it may hold `"`): SD-IDs, PARAM
    /// names and raw PARAM-VALUEs from there need no escape (the SD grammar keeps `"` out of
    /// them).
    sd_clean: std::ops::Range<usize>,
}

impl<'o> Out<'o> {
    /// `buf` with no octets known to be clean: everything written is scanned.
    pub fn plain(buf: &'o mut BytesMut) -> Self {
        Out {
            buf,
            clean: 0..0,
            sd_clean: 0..0,
        }
    }

    /// `buf` for the record of `frame`: one scan finds its clean prefixes.
    fn for_frame(buf: &'o mut BytesMut, frame: &[u8]) -> Self {
        let start = frame.as_ptr() as usize;
        let sd_clean = find_backslash_or_control(frame).unwrap_or(frame.len());
        let clean = match memchr::memchr(b'"', &frame[..sd_clean]) {
            Some(q) => q,
            None => sd_clean,
        };
        Out {
            buf,
            clean: start..start + clean,
            sd_clean: start..start + sd_clean,
        }
    }

    /// Whether `bytes` lies inside the clean part of the frame.
    #[inline]
    fn is_clean(&self, bytes: &[u8]) -> bool {
        let p = bytes.as_ptr() as usize;
        p >= self.clean.start && p + bytes.len() <= self.clean.end
    }

    /// Whether `bytes`, a piece of the SD that cannot hold `"`, lies in the part of the frame
    /// without `\\` and controls.
    #[inline]
    fn is_sd_clean(&self, bytes: &[u8]) -> bool {
        let p = bytes.as_ptr() as usize;
        p >= self.sd_clean.start && p + bytes.len() <= self.sd_clean.end
    }
}

impl Out<'_> {
    /// Appends `parts` one after another with one capacity check for all of them (a
    /// `put_slice` per part checks, reserves and sets the length each time). Parts of constant
    /// length are copied with fixed-size moves, short ones without a `memcpy` call.
    #[inline(always)]
    fn put_all<const N: usize>(&mut self, parts: [&[u8]; N]) {
        let total = parts.iter().fold(0usize, |t, p| t.saturating_add(p.len()));
        // Panics (capacity overflow) rather than wraps if `total` saturated.
        self.buf.reserve(total);
        let spare = self.buf.spare_capacity_mut();
        debug_assert!(spare.len() >= total);
        let dst = spare.as_mut_ptr().cast::<u8>();
        let mut at = 0;
        for p in parts {
            // SAFETY: `reserve(total)` left at least `total` octets of spare capacity at `dst`,
            // and the parts add up to `total`, so `at + p.len() <= total` for every part; a
            // part is a borrowed slice, so it cannot overlap the buffer's spare capacity (which
            // `self.buf`, borrowed mutably, owns).
            unsafe { copy_short(p, dst.add(at)) };
            at += p.len();
        }
        let len = self.buf.len() + total;
        // SAFETY: the `total` octets after the old length were all written above, inside the
        // capacity `reserve` made.
        unsafe { self.buf.set_len(len) };
    }
}

impl Out<'_> {
    /// Appends `run` then the JSON escape of `b` (an octet [`find_escape`] flagged) with one
    /// capacity check: all 6 octets of the escape are stored (a fixed-size move) and only its
    /// length kept.
    #[inline(always)]
    fn put_run_and_escape(&mut self, run: &[u8], b: u8) {
        let (esc, n) = escape_of(b);
        // Panics (capacity overflow) rather than wraps.
        let room = run.len().saturating_add(esc.len());
        self.buf.reserve(room);
        let spare = self.buf.spare_capacity_mut();
        debug_assert!(spare.len() >= room && n <= esc.len());
        let dst = spare.as_mut_ptr().cast::<u8>();
        // SAFETY: `reserve(room)` left at least `run.len() + 6` octets of spare capacity at
        // `dst`; `run` is borrowed, so it does not overlap the spare capacity of `self.buf`.
        unsafe {
            copy_short(run, dst);
            dst.add(run.len()).cast::<[u8; 6]>().write_unaligned(esc);
        }
        let len = self.buf.len() + run.len() + n;
        // SAFETY: the `run.len() + n` octets after the old length were written above (`n <= 6`),
        // inside the capacity `reserve` made.
        unsafe { self.buf.set_len(len) };
    }
}

/// Copies `src` to `dst`. Up to 32 octets with two (overlapping) fixed-size moves of 1, 4, 8
/// or 16 octets each, inline; longer runs by `copy_nonoverlapping` (a `memcpy` call, which
/// itself costs a dozen instructions before it copies).
///
/// # Safety
///
/// `dst` must be valid for `src.len()` octets of writes and must not overlap `src`.
#[inline(always)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    use std::ptr::{read_unaligned, write_unaligned};
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY (every branch): each read is of `W` octets at `0` or `n - W` with `W <= n`, so
    // inside `src`; each write is at the same offset of `dst`, valid for `n` octets by the
    // caller's contract; unaligned moves are allowed.
    unsafe {
        macro_rules! two {
            ($t:ty, $w:expr) => {{
                let a = read_unaligned(s.cast::<$t>());
                let b = read_unaligned(s.add(n - $w).cast::<$t>());
                write_unaligned(dst.cast::<$t>(), a);
                write_unaligned(dst.add(n - $w).cast::<$t>(), b);
            }};
        }
        if n <= 16 {
            if n >= 8 {
                two!(u64, 8)
            } else if n >= 4 {
                two!(u32, 4)
            } else if n > 0 {
                // 1-3 octets: the first, the middle and the last (the same octet when n = 1).
                *dst = *s;
                *dst.add(n / 2) = *s.add(n / 2);
                *dst.add(n - 1) = *s.add(n - 1);
            }
        } else if n <= 32 {
            two!(u128, 16)
        } else {
            std::ptr::copy_nonoverlapping(s, dst, n);
        }
    }
}

/// Index of the first `\\` or control (< 0x20) in `b`: 16 octets at a time (SSE2) where
/// available.
fn find_backslash_or_control(b: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    let (i, hit) = scan_sse2::<false, false>(b);
    #[cfg(not(target_arch = "x86_64"))]
    let (i, hit) = (0, None);
    hit.or_else(|| {
        b[i..]
            .iter()
            .position(|&c| c == b'\\' || c < 0x20)
            .map(|p| i + p)
    })
}

impl std::ops::Deref for Out<'_> {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        self.buf
    }
}

impl std::ops::DerefMut for Out<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        self.buf
    }
}

/// What is the same for every record of a batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    /// Server time the batch was read, RFC 3339 UTC (see [`now_rfc3339`]).
    pub received_at: &'a str,
    /// `ip:port` of the sender; `None` offline.
    pub peer: Option<&'a str>,
    /// The sender's verified TLS client certificate identity (CN, else first DNS SAN); `None`
    /// on plain TCP, offline, or when the listener does not ask for client certificates.
    pub peer_cert: Option<&'a str>,
}

/// What the router filters on, for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts<'a> {
    /// Kubernetes kind, `None` for other records.
    pub kind: Option<K8sKind>,
    /// Event category.
    pub category: Option<Category>,
    /// Severity, `None` when the frame did not parse.
    pub severity: Option<u8>,
    /// APP-NAME.
    pub app_name: Option<&'a str>,
}

/// The current time as the record writes it (`2026-11-26T10:50:29.123456Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Writes one JSON line per frame.
#[derive(Debug, Clone)]
pub struct Encoder<'c> {
    format: Format,
    classifier: &'c Classifier,
}

impl<'c> Encoder<'c> {
    /// An encoder that parses with `format` and classifies with `classifier`.
    pub fn new(format: Format, classifier: &'c Classifier) -> Self {
        Encoder { format, classifier }
    }

    /// Appends the record of `frame`, ending in `\n`, to `out`; counts it in `counts`.
    pub fn encode<'f>(
        &self,
        frame: &'f Frame,
        ctx: &RecordContext<'_>,
        buf: &mut BytesMut,
        counts: &mut BatchCounts,
    ) -> Facts<'f> {
        // One scan of the frame for the first octets that need a JSON escape: the header fields
        // before the first `"`, and the SD names and values before the first `\\` or control,
        // are then copied without a scan of their own.
        self.encode_into(frame, ctx, &mut Out::for_frame(buf, &frame.data), counts)
    }

    /// [`Encoder::encode`] into `out` as given.
    fn encode_into<'f>(
        &self,
        frame: &'f Frame,
        ctx: &RecordContext<'_>,
        out: &mut Out<'_>,
        counts: &mut BatchCounts,
    ) -> Facts<'f> {
        counts.records += 1;
        let data: &'f [u8] = &frame.data;
        let mut facts = Facts {
            kind: None,
            category: None,
            severity: None,
            app_name: None,
        };
        write_key_str(out, b"{\"received_at\":", ctx.received_at.as_bytes());
        if let Some(peer) = ctx.peer {
            write_key_str(out, b",\"peer\":", peer.as_bytes());
        }
        if let Some(cert) = ctx.peer_cert {
            write_key_str(out, b",\"peer_cert\":", cert.as_bytes());
        }
        match frame.kind {
            FrameKind::Error(kind) => {
                counts.framing_errors += 1;
                counts.detail.frame_errors[crate::stats::frame_error_index(kind)] += 1;
                write_null_header(out);
                out.put_slice(b",\"framing_error\":");
                write_str(out, kind.code());
                write_raw(out, data);
            }
            FrameKind::Complete | FrameKind::Truncated { .. } => {
                match parse::parse(data, self.format) {
                    Ok(msg) => {
                        facts.severity = Some(msg.severity());
                        facts.app_name = msg.app_name;
                        self.write_message(out, &msg, data, &mut facts, counts);
                    }
                    Err(e) => {
                        counts.parse_errors += 1;
                        write_null_header(out);
                        out.put_slice(b",\"parse_error\":");
                        write_str(out, &e.to_string());
                        write_raw(out, data);
                    }
                }
                if let FrameKind::Truncated {
                    reason,
                    declared_length,
                } = frame.kind
                {
                    counts.truncated += 1;
                    counts.detail.truncations[crate::stats::frame_error_index(reason)] += 1;
                    out.put_slice(b",\"truncated\":true,\"truncation\":");
                    write_str(out, reason.code());
                    out.put_slice(b",\"declared_length\":");
                    match declared_length {
                        Some(n) => write_u64(out, n),
                        None => out.put_slice(b"null"),
                    }
                }
            }
        }
        out.put_all([b"}\n"]);
        facts
    }

    /// `frame` is the bytes `m` was parsed from (its index in the batch is `counts.records - 1`).
    fn write_message<'f>(
        &self,
        out: &mut Out<'_>,
        m: &Message<'f>,
        frame: &[u8],
        facts: &mut Facts<'f>,
        counts: &mut BatchCounts,
    ) {
        let (keys, keys_len) = &PRI_KEYS[usize::from(m.pri)];
        let keys = &keys[..usize::from(*keys_len)];
        match m.version {
            Some(1) => out.put_all([keys, b"1"]),
            Some(v) => {
                out.put_all([keys]);
                write_u64(out, u64::from(v));
            }
            None => out.put_all([keys, b"null"]),
        }
        write_opt_field(out, b",\"timestamp\":", m.timestamp);
        write_opt_field(out, b",\"hostname\":", m.hostname);
        write_opt_field(out, b",\"app_name\":", m.app_name);
        write_opt_field(out, b",\"procid\":", m.procid);
        write_opt_field(out, b",\"msgid\":", m.msgid);
        // Only Kubernetes records need the SD values; they are picked up while the SD is
        // written (one walk over it).
        let kind = m.app_name.and_then(K8sKind::from_app_name);
        let mut sd_values = SdValuesBuilder::default();
        match &m.structured_data {
            Some(sd) => {
                out.put_all([b",\"structured_data\":"]);
                write_sd(out, sd, kind.is_some().then_some(&mut sd_values));
            }
            None => out.put_all([b",\"structured_data\":null"]),
        }
        match m.msg {
            None => out.put_all([b",\"message\":null"]),
            Some(bytes) => {
                let text = strip_trailing_newline(bytes);
                if !write_text(out, b",\"message\":\"", text) {
                    out.put_all([b",\"message\":"]);
                    write_lossy(out, text);
                    out.put_slice(b",\"message_base64\":");
                    write_base64(out, text);
                }
            }
        }
        if kind.is_none() {
            return;
        }
        let k = self.classifier.classify_parts(
            m.app_name,
            sd_values.finish(),
            m.msg.unwrap_or_default(),
        );
        if let Some(k) = k {
            facts.kind = Some(k.kind);
            facts.category = k.category;
            match k.kind {
                K8sKind::Event => counts.events += 1,
                K8sKind::PodLog => counts.pod_logs += 1,
            }
            if let Some(c) = k.category {
                counts.category(c);
            }
            counts.detail.k8s(
                k.kind,
                k.category,
                k.namespace.as_deref(),
                k.object.as_deref(),
                m.msg.unwrap_or_default(),
                frame,
                counts.records.saturating_sub(1),
            );
            self.write_k8s(out, &k);
        }
    }

    fn write_k8s(&self, out: &mut Out<'_>, k: &K8sInfo<'_>) {
        // The kind is one of two fixed names that need no escape.
        let kind = k.kind.as_str().as_bytes();
        debug_assert!(find_escape(kind).is_none());
        out.put_all([b",\"k8s\":{\"kind\":\"", kind, b"\""]);
        let category = k.category.map(|c| self.classifier.name(c));
        write_opt_field(out, b",\"category\":", category);
        write_opt_field(out, b",\"namespace\":", k.namespace.as_deref());
        write_opt_field(out, b",\"object\":", k.object.as_deref());
        write_opt_field(out, b",\"container\":", k.container.as_deref());
        write_opt_field(out, b",\"vm_id\":", k.vm_id.as_deref());
        out.put_all([b"}"]);
    }
}

/// MSG without one trailing LF or CRLF (the PKS sender's line end, counted in MSG-LEN).
pub fn strip_trailing_newline(msg: &[u8]) -> &[u8] {
    match msg {
        [rest @ .., b'\r', b'\n'] => rest,
        [rest @ .., b'\n'] => rest,
        _ => msg,
    }
}

fn write_null_header(out: &mut Out<'_>) {
    out.put_slice(
        b",\"facility\":null,\"severity\":null,\"version\":null,\"timestamp\":null,\"hostname\":null,\"app_name\":null,\"procid\":null,\"msgid\":null,\"structured_data\":null,\"message\":null",
    );
}

fn write_raw(out: &mut Out<'_>, data: &[u8]) {
    out.put_slice(b",\"raw\":");
    match std::str::from_utf8(data) {
        Ok(s) => write_str(out, s),
        Err(_) => {
            write_lossy(out, data);
            out.put_slice(b",\"raw_base64\":");
            write_base64(out, data);
        }
    }
}

/// Structured data as `{"SD-ID": {"PARAM": "value"}}`. A PARAM name that repeats inside one
/// element becomes an array of its values; an SD-ID that repeats (accepted in `auto` format)
/// has its params merged into the first one, the same way. Nothing is overwritten.
///
/// One walk over the SD: every element and param is written as it comes while the SD-IDs and,
/// per element, the PARAM names are remembered on the stack (up to 32 each). A repeat (or more
/// than 32 names) is rare: the output is then cut back and written by the (correct, slower)
/// grouped path. When `k8s` is given, the params of the first [`SD_ID`] element are offered to
/// it in the same walk.
fn write_sd<'a>(
    out: &mut Out<'_>,
    sd: &StructuredData<'a>,
    mut k8s: Option<&mut SdValuesBuilder<'a>>,
) {
    const N: usize = 32;
    let start = out.len();
    out.put_u8(b'{');
    let mut ids = [""; N];
    let mut repeats = false;
    'walk: for (n_ids, el) in sd.elements().enumerate() {
        if n_ids == N || ids[..n_ids].contains(&el.id) {
            repeats = true;
            break;
        }
        ids[n_ids] = el.id;
        if n_ids > 0 {
            out.put_all([b","]);
        }
        if out.is_sd_clean(el.id.as_bytes()) {
            out.put_all([b"\"", el.id.as_bytes(), b"\":{"]);
        } else {
            write_str(out, el.id);
            out.put_all([b":{"]);
        }
        // Only the first SD_ID element counts; an SD-ID that repeats leaves this walk anyway.
        let mut collecting = k8s.is_some() && el.id == SD_ID;
        let mut names = [""; N];
        for (n, (name, value)) in el.params().enumerate() {
            if n == N || names[..n].contains(&name) {
                repeats = true;
                break 'walk;
            }
            names[n] = name;
            let raw = value.raw().as_bytes();
            if out.is_sd_clean(name.as_bytes()) && out.is_sd_clean(raw) {
                // Neither needs an escape (a raw value holds no `"` and, here, no `\\`).
                let name = name.as_bytes();
                if n > 0 {
                    out.put_all([b",\"", name, b"\":\"", raw, b"\""]);
                } else {
                    out.put_all([b"\"", name, b"\":\"", raw, b"\""]);
                }
            } else {
                if n > 0 {
                    out.put_all([b","]);
                }
                write_sd_str(out, name);
                out.put_all([b":"]);
                write_param_value(out, value.raw());
            }
            if collecting {
                if let Some(v) = k8s.as_deref_mut() {
                    collecting = v.offer(name, || value.unescaped());
                }
            }
        }
        out.put_u8(b'}');
    }
    if repeats {
        out.truncate(start);
        out.put_u8(b'{');
        write_sd_grouped(out, sd);
        // Collect the values again from scratch, as `Classifier::classify` does.
        if let Some(v) = k8s {
            *v = SdValuesBuilder::default();
            if let Some(el) = sd.element(SD_ID) {
                for (name, value) in el.params() {
                    if !v.offer(name, || value.unescaped()) {
                        break;
                    }
                }
            }
        }
    }
    out.put_u8(b'}');
}

/// The grouped form of [`write_sd`]: SD-IDs in order of first appearance, each with the params
/// of all its elements; a PARAM name that repeats becomes an array of its values, in order.
///
/// Linear in the size of the SD (each element is split and each param read once; hash maps
/// group them): a hostile frame with thousands of elements or params costs no more than its
/// length. This path allocates; it only runs when something repeats or there are more than 32
/// SD-IDs or params in one element.
fn write_sd_grouped(out: &mut Out<'_>, sd: &StructuredData<'_>) {
    use std::collections::hash_map::Entry;
    use std::collections::HashMap;
    // One group per SD-ID; in each, one slot per PARAM name with its values.
    type Group<'a> = (
        &'a str,
        Vec<(&'a str, Vec<ParamValue<'a>>)>,
        HashMap<&'a str, usize>,
    );
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for el in sd.elements() {
        let g = *by_id.entry(el.id).or_insert_with(|| {
            groups.push((el.id, Vec::new(), HashMap::new()));
            groups.len() - 1
        });
        let (_, params, by_name) = &mut groups[g];
        for (name, value) in el.params() {
            match by_name.entry(name) {
                Entry::Occupied(e) => params[*e.get()].1.push(value),
                Entry::Vacant(e) => {
                    e.insert(params.len());
                    params.push((name, vec![value]));
                }
            }
        }
    }
    for (i, (id, params, _)) in groups.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        write_str(out, id);
        out.put_slice(b":{");
        for (j, (name, values)) in params.iter().enumerate() {
            if j > 0 {
                out.put_u8(b',');
            }
            write_str(out, name);
            out.put_u8(b':');
            match values.as_slice() {
                [one] => write_param_value(out, one.raw()),
                many => {
                    out.put_u8(b'[');
                    for (k, v) in many.iter().enumerate() {
                        if k > 0 {
                            out.put_u8(b',');
                        }
                        write_param_value(out, v.raw());
                    }
                    out.put_u8(b']');
                }
            }
        }
        out.put_u8(b'}');
    }
}

/// Writes `key` (the JSON punctuation and key before a value) then `s` as a JSON string, or
/// `null`.
#[inline(always)]
fn write_opt_field(out: &mut Out<'_>, key: &[u8], s: Option<&str>) {
    match s {
        Some(s) => write_key_str(out, key, s.as_bytes()),
        None => out.put_all([key, b"null"]),
    }
}

/// Writes `key` then `s` (UTF-8) as a JSON string: with one capacity check when nothing in
/// `s` needs an escape (known from the frame's clean prefix, else found by one scan).
#[inline(always)]
fn write_key_str(out: &mut Out<'_>, key: &[u8], s: &[u8]) {
    let first = if out.is_clean(s) {
        None
    } else {
        find_escape(s)
    };
    match first {
        None => out.put_all([key, b"\"", s, b"\""]),
        Some(i) => {
            out.put_all([key, b"\"", &s[..i]]);
            write_escaped_from(out, &s[i..]);
            out.put_all([b"\""]);
        }
    }
}

/// Writes `lead` (the key and the opening `"`), then `text` as the rest of a JSON string, if
/// `text` is UTF-8, and returns whether it was (else writes nothing). One scan does both: the
/// JSON escapes of the ASCII part are found with a check for non-ASCII octets in the same words,
/// and only from the first non-ASCII octet on is the rest validated (by `from_utf8`) and written.
fn write_text(out: &mut Out<'_>, lead: &[u8], text: &[u8]) -> bool {
    let mark = out.len();
    out.put_all([lead]);
    let mut start = 0;
    while let Some(rel) = find_flagged::<true>(&text[start..]) {
        let i = start + rel;
        if text[i] >= 0x80 {
            // Everything before `i` is ASCII, so `i` starts a character.
            if std::str::from_utf8(&text[i..]).is_err() {
                out.truncate(mark);
                return false;
            }
            out.put_all([&text[start..i]]);
            write_escaped_bytes(out, &text[i..]);
            out.put_all([b"\""]);
            return true;
        }
        out.put_run_and_escape(&text[start..i], text[i]);
        start = i + 1;
    }
    out.put_all([&text[start..], b"\""]);
    true
}

/// Writes `bytes` as a JSON string the way `String::from_utf8_lossy` would read them (each
/// invalid sequence becomes U+FFFD), without building that `String`.
fn write_lossy(out: &mut Out<'_>, bytes: &[u8]) {
    out.put_u8(b'"');
    for chunk in bytes.utf8_chunks() {
        write_escaped(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.put_slice("\u{fffd}".as_bytes());
        }
    }
    out.put_u8(b'"');
}

/// Writes `s` as a JSON string.
pub fn write_str(out: &mut Out<'_>, s: &str) {
    out.put_u8(b'"');
    write_escaped(out, s);
    out.put_u8(b'"');
}

/// Writes a PARAM-VALUE as sent (`raw`) as the JSON string of its unescaped value, in one scan:
/// `\"` `\\` `\]` lose their backslash (RFC 5424 §6.3.3; any other backslash stays), then JSON
/// escaping applies, the same as writing [`parse::ParamValue::chunks`] one by one. The scan for
/// JSON escapes also stops at every backslash, so a value without one is copied whole.
fn write_param_value(out: &mut Out<'_>, raw: &str) {
    let bytes = raw.as_bytes();
    out.put_u8(b'"');
    if out.is_sd_clean(bytes) {
        // No SD escape and nothing JSON escapes (a raw value holds no `"`).
        out.extend_from_slice(bytes);
        out.put_u8(b'"');
        return;
    }
    let mut start = 0;
    while let Some(rel) = find_escape(&bytes[start..]) {
        let i = start + rel;
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match bytes[i] {
            b'\\' => match bytes.get(i + 1) {
                Some(b'"') => {
                    out.extend_from_slice(b"\\\"");
                    start = i + 2;
                }
                Some(b']') => {
                    out.put_u8(b']');
                    start = i + 2;
                }
                Some(b'\\') => {
                    out.extend_from_slice(b"\\\\");
                    start = i + 2;
                }
                _ => out.extend_from_slice(b"\\\\"),
            },
            b => write_escape(out, b),
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.put_u8(b'"');
}

/// An SD-ID or PARAM name (never holding `"`) as a JSON string.
fn write_sd_str(out: &mut Out<'_>, s: &str) {
    if out.is_sd_clean(s.as_bytes()) {
        out.put_u8(b'"');
        out.extend_from_slice(s.as_bytes());
        out.put_u8(b'"');
    } else {
        write_str(out, s);
    }
}

/// Flags (high bit of the octet) the octets of `x` that need an escape in a JSON string:
/// controls (< 0x20), `"` and `\\`. The lowest flagged octet is exact (a borrow only runs
/// upwards from a real hit), which is all [`find_escape`] uses.
#[inline(always)]
fn escape_mask(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let ctl = x.wrapping_sub(LO * 0x20) & !x;
    let q = x ^ (LO * u64::from(b'"'));
    let bs = x ^ (LO * u64::from(b'\\'));
    (ctl | (q.wrapping_sub(LO) & !q) | (bs.wrapping_sub(LO) & !bs)) & HI
}

/// Index of the first octet of `b` that needs a JSON escape, 8 octets at a time.
#[inline]
fn find_escape(b: &[u8]) -> Option<usize> {
    find_flagged::<false>(b)
}

/// [`find_escape`], or with `NON_ASCII` also the first octet >= 0x80: 16 octets at a time
/// (SSE2) where available, then 8 at a time.
#[inline(always)]
fn find_flagged<const NON_ASCII: bool>(b: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let (done, hit) = scan_sse2::<true, NON_ASCII>(b);
        if hit.is_some() {
            return hit;
        }
        find_flagged_swar::<NON_ASCII>(&b[done..]).map(|i| done + i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    find_flagged_swar::<NON_ASCII>(b)
}

/// The whole 16-octet blocks of `b`, looking for a control (< 0x20), `\\`, with `QUOTE` a `"`,
/// with `NON_ASCII` an octet >= 0x80: how many octets it looked at, and the first hit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scan_sse2<const QUOTE: bool, const NON_ASCII: bool>(b: &[u8]) -> (usize, Option<usize>) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut i = 0;
    // SAFETY: SSE2 is part of the x86_64 baseline (always enabled); every load reads the 16
    // octets at `i..i + 16`, inside `b` by the loop condition, unaligned loads allowed.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let ctl_max = _mm_set1_epi8(0x1f);
        while i + 16 <= b.len() {
            let x = _mm_loadu_si128(b.as_ptr().add(i).cast::<__m128i>());
            // x <= 0x1f (unsigned): min(x, 0x1f) == x.
            let ctl = _mm_cmpeq_epi8(_mm_min_epu8(x, ctl_max), x);
            let mut hits = _mm_or_si128(ctl, _mm_cmpeq_epi8(x, backslash));
            if QUOTE {
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(x, quote));
            }
            let mut bits = _mm_movemask_epi8(hits) as u32;
            if NON_ASCII {
                // The top bit of each octet: >= 0x80.
                bits |= _mm_movemask_epi8(x) as u32;
            }
            if bits != 0 {
                return (i, Some(i + bits.trailing_zeros() as usize));
            }
            i += 16;
        }
    }
    (i, None)
}

/// [`find_flagged`] 8 octets at a time (SWAR).
#[inline(always)]
fn find_flagged_swar<const NON_ASCII: bool>(b: &[u8]) -> Option<usize> {
    const HI: u64 = 0x8080_8080_8080_8080;
    let mask = |x: u64| escape_mask(x) | if NON_ASCII { x & HI } else { 0 };
    let mut words = b.chunks_exact(8);
    let mut i = 0;
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let hits = mask(u64::from_le_bytes(w));
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    // The tail (0-7 octets) as one word, without a variable-length copy (a memcpy call).
    let rem = words.remainder();
    if rem.is_empty() {
        return None;
    }
    let hits = mask(tail_word(b, rem.len()));
    (hits != 0).then(|| i + (hits.trailing_zeros() / 8) as usize)
}

/// The last `n` (1-7) octets of `b` as the low octets of a word, the others an octet that needs
/// no escape: overlapping fixed-size reads, whose overlap holds the same octets.
#[inline(always)]
fn tail_word(b: &[u8], n: usize) -> u64 {
    let t = &b[b.len() - n..];
    let x = if n >= 4 {
        let lo = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let hi = u32::from_le_bytes([t[n - 4], t[n - 3], t[n - 2], t[n - 1]]);
        u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
    } else {
        u64::from(t[0])
            | (u64::from(t[n / 2]) << (8 * (n / 2)))
            | (u64::from(t[n - 1]) << (8 * (n - 1)))
    };
    let pad = u64::from_le_bytes([b'a'; 8]) & (!0u64 << (8 * n));
    x | pad
}

/// Writes the JSON escape of `b`, an octet that [`find_escape`] flagged.
#[inline(always)]
fn write_escape(out: &mut Out<'_>, b: u8) {
    out.put_run_and_escape(b"", b);
}

/// The JSON escape of `b`, an octet that [`find_escape`] flagged (so below 0x80): its octets
/// (the first `n`), from a table.
#[inline(always)]
fn escape_of(b: u8) -> ([u8; 6], usize) {
    debug_assert!(b < 0x20 || b == b'"' || b == b'\\');
    let (esc, n) = ESCAPES[usize::from(b & 0x7f)];
    (esc, usize::from(n))
}

/// [`escape_of`] for every ASCII octet (those that need no escape map to a `\u00XX` form that
/// is never used).
static ESCAPES: [([u8; 6], u8); 128] = {
    let mut table = [([0u8; 6], 0u8); 128];
    let mut b = 0;
    while b < 128 {
        table[b] = escape_of_slow(b as u8);
        b += 1;
    }
    table
};

/// The table entry of [`ESCAPES`] for `b`.
const fn escape_of_slow(b: u8) -> ([u8; 6], u8) {
    match b {
        b'"' => (*b"\\\"    ", 2),
        b'\\' => (*b"\\\\    ", 2),
        b'\n' => (*b"\\n    ", 2),
        b'\r' => (*b"\\r    ", 2),
        b'\t' => (*b"\\t    ", 2),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let (hi, lo) = (HEX[(b >> 4) as usize], HEX[(b & 15) as usize]);
            ([b'\\', b'u', b'0', b'0', hi, lo], 6)
        }
    }
}

/// Writes `s` JSON-escaped (without quotes): runs that need no escape are copied whole.
fn write_escaped(out: &mut Out<'_>, s: &str) {
    write_escaped_bytes(out, s.as_bytes());
}

/// [`write_escaped`] for octets known to be UTF-8.
fn write_escaped_bytes(out: &mut Out<'_>, bytes: &[u8]) {
    if out.is_clean(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    write_escaped_from(out, bytes);
}

/// [`write_escaped_bytes`] without the clean-prefix check (for octets already found to need an
/// escape): each run that needs none and the escape after it with one capacity check.
fn write_escaped_from(out: &mut Out<'_>, bytes: &[u8]) {
    let mut start = 0;
    while let Some(rel) = find_escape(&bytes[start..]) {
        let i = start + rel;
        out.put_run_and_escape(&bytes[start..i], bytes[i]);
        start = i + 1;
    }
    out.put_all([&bytes[start..]]);
}

/// For each PRI, `,"facility":F,"severity":S,"version":` and its length: the constant run of
/// every parsed record's header in one copy.
static PRI_KEYS: [([u8; 48], u8); 256] = pri_keys();

const fn pri_keys() -> [([u8; 48], u8); 256] {
    const fn put(buf: &mut [u8; 48], mut at: usize, s: &[u8]) -> usize {
        let mut i = 0;
        while i < s.len() {
            buf[at] = s[i];
            at += 1;
            i += 1;
        }
        at
    }
    const fn put_num(buf: &mut [u8; 48], mut at: usize, n: u8) -> usize {
        if n >= 100 {
            buf[at] = b'0' + n / 100;
            at += 1;
        }
        if n >= 10 {
            buf[at] = b'0' + n / 10 % 10;
            at += 1;
        }
        buf[at] = b'0' + n % 10;
        at + 1
    }
    let mut table = [([0u8; 48], 0u8); 256];
    let mut pri = 0;
    while pri < 256 {
        let buf = &mut table[pri].0;
        let mut at = put(buf, 0, b",\"facility\":");
        at = put_num(buf, at, (pri >> 3) as u8);
        at = put(buf, at, b",\"severity\":");
        at = put_num(buf, at, (pri & 7) as u8);
        at = put(buf, at, b",\"version\":");
        table[pri].1 = at as u8;
        pri += 1;
    }
    table
}

fn write_u64(out: &mut Out<'_>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

fn write_base64(out: &mut Out<'_>, data: &[u8]) {
    use base64::Engine;
    out.put_u8(b'"');
    let start = out.len();
    let len = data.len().div_ceil(3) * 4;
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_json() {
        let mut out = BytesMut::new();
        write_str(&mut Out::plain(&mut out), "a\"b\\c\nd\te\u{1}f é");
        assert_eq!(&out[..], b"\"a\\\"b\\\\c\\nd\\te\\u0001f \xc3\xa9\"");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, "a\"b\\c\nd\te\u{1}f é");
    }

    /// The escaping the record has always used: `\"` `\\` `\n` `\r` `\t`, other controls as
    /// `\u00XX` (lower-case hex), everything else as is.
    fn reference_escape(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn escapes_every_octet_at_every_position() {
        // Each ASCII char and a few multi-octet ones, at each offset of texts of 1-40 chars (the
        // 16-octet blocks, the 8-octet words, the tail and the boundaries between them), with a
        // `"` two chars later.
        let extra = ['\u{7f}', '\u{80}', 'é', '\u{a0}', '\u{ffff}', '😀'];
        for c in (0u8..0x80).map(char::from).chain(extra) {
            for (len, pos) in (1..=40).flat_map(|len| (0..len).map(move |pos| (len, pos))) {
                let mut text: Vec<char> = vec!['x'; len];
                text[pos] = c;
                if pos + 2 < len {
                    text[pos + 2] = '"';
                }
                let s: String = text.into_iter().collect();
                let mut out = BytesMut::new();
                write_str(&mut Out::plain(&mut out), &s);
                assert_eq!(&out[..], reference_escape(&s).as_bytes(), "{c:?} at {pos}");
                let back: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(back, s);
            }
        }
    }

    #[test]
    fn numbers_and_base64() {
        let mut out = BytesMut::new();
        for n in [0u64, 7, 10, 191, u64::MAX] {
            out.clear();
            write_u64(&mut Out::plain(&mut out), n);
            assert_eq!(std::str::from_utf8(&out).unwrap(), n.to_string());
        }
        out.clear();
        write_base64(&mut Out::plain(&mut out), b"\xff\xfeab");
        assert_eq!(&out[..], b"\"//5hYg==\"");
    }

    #[test]
    fn pri_keys_and_short_copies() {
        for pri in 0..=255u8 {
            let (keys, len) = &PRI_KEYS[usize::from(pri)];
            let want = format!(
                ",\"facility\":{},\"severity\":{},\"version\":",
                pri >> 3,
                pri & 7
            );
            assert_eq!(&keys[..usize::from(*len)], want.as_bytes());
        }
        // Every length around the 1/4/8/16/32 boundaries, appended after an odd offset.
        let src: Vec<u8> = (0..80u8).collect();
        for n in 0..=src.len() {
            let mut out = BytesMut::from(&b"x"[..]);
            Out::plain(&mut out).put_all([&src[..n], b"-", &src[src.len() - n..]]);
            let mut want = b"x".to_vec();
            want.extend_from_slice(&src[..n]);
            want.push(b'-');
            want.extend_from_slice(&src[src.len() - n..]);
            assert_eq!(&out[..], &want[..], "{n}");
        }
    }

    fn encode_one(frame: &[u8], kind: FrameKind) -> (String, BatchCounts) {
        let classifier = Classifier::builtin();
        let enc = Encoder::new(Format::Auto, &classifier);
        let frame = Frame {
            offset: 0,
            data: bytes::Bytes::copy_from_slice(frame),
            kind,
            wire_len: frame.len() as u64,
            dropped_before: 0,
        };
        let ctx = RecordContext {
            received_at: "2026-11-26T00:00:00.000000Z",
            peer: Some("127.0.0.1:5000"),
            peer_cert: None,
        };
        let mut out = BytesMut::new();
        let mut counts = BatchCounts::new(classifier.categories().len());
        enc.encode(&frame, &ctx, &mut out, &mut counts);
        (String::from_utf8(out.to_vec()).unwrap(), counts)
    }

    #[test]
    fn record_keys_in_contract_order() {
        let (line, counts) = encode_one(
            b"<14>1 2024-03-11T08:00:18.1+00:00 prod k8s.event/ns/web-1/ - - [kubernetes@47450 namespace_name=\"ns\" object_name=\"web-1\" container_name=\"\"] Back-off restarting failed container\n",
            FrameKind::Complete,
        );
        assert_eq!(
            line,
            concat!(
                r#"{"received_at":"2026-11-26T00:00:00.000000Z","peer":"127.0.0.1:5000","facility":1,"severity":6,"#,
                r#""version":1,"timestamp":"2024-03-11T08:00:18.1+00:00","hostname":"prod","app_name":"k8s.event/ns/web-1/","#,
                r#""procid":null,"msgid":null,"structured_data":{"kubernetes@47450":{"namespace_name":"ns","object_name":"web-1","container_name":""}},"#,
                r#""message":"Back-off restarting failed container","#,
                r#""k8s":{"kind":"event","category":"back_off","namespace":"ns","object":"web-1","container":"","vm_id":null}}"#,
                "\n"
            )
        );
        assert_eq!((counts.records, counts.events), (1, 1));
    }

    #[test]
    fn peer_cert_follows_peer() {
        let classifier = Classifier::builtin();
        let enc = Encoder::new(Format::Auto, &classifier);
        let frame = Frame {
            offset: 0,
            data: bytes::Bytes::from_static(b"<14>1 - h a - - - m"),
            kind: FrameKind::Complete,
            wire_len: 19,
            dropped_before: 0,
        };
        let ctx = RecordContext {
            received_at: "2026-11-26T00:00:00.000000Z",
            peer: Some("127.0.0.1:5000"),
            peer_cert: Some("fluent-bit.pks-system"),
        };
        let mut out = BytesMut::new();
        let mut counts = BatchCounts::new(classifier.categories().len());
        enc.encode(&frame, &ctx, &mut out, &mut counts);
        let line = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            line.starts_with(concat!(
                r#"{"received_at":"2026-11-26T00:00:00.000000Z","peer":"127.0.0.1:5000","#,
                r#""peer_cert":"fluent-bit.pks-system","facility":1,"#
            )),
            "{line}"
        );
    }

    #[test]
    fn repeated_params_become_arrays_and_repeated_ids_merge() {
        let (line, _) = encode_one(
            br#"<14>1 - - - - - [a x="1" y="2" x="3\"q"][b z="9"][a x="4" w="5"] m"#,
            FrameKind::Complete,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["structured_data"],
            serde_json::json!({"a": {"x": ["1", "3\"q", "4"], "y": "2", "w": "5"}, "b": {"z": "9"}})
        );
        // Key order inside the merged element follows first appearance.
        assert!(line.contains(r#"{"a":{"x":["1","3\"q","4"],"y":"2","w":"5"},"b":{"z":"9"}}"#));
    }

    /// Regression (issue 4 review): the grouped SD writer re-split the whole SD for every param
    /// and every element, so one 60 KB frame with thousands of params or SD-IDs took 1-2 s of
    /// CPU in release (a frame per second per sender kept a core busy). It is linear now.
    #[test]
    fn many_sd_params_or_ids_encode_in_linear_time() {
        let mut one_element = String::from("<14>1 - h a - - [a");
        for i in 0..6000 {
            one_element.push_str(&format!(" x{i}=\"v\""));
        }
        one_element.push_str("] m");
        let mut many_ids = String::from("<14>1 - h a - - ");
        for i in 0..5000 {
            many_ids.push_str(&format!("[a{i} x=\"v\"]"));
        }
        many_ids.push_str(" m");
        for (frame, n) in [(&one_element, 6000), (&many_ids, 5000)] {
            assert!(frame.len() < 65536);
            let started = std::time::Instant::now();
            let (line, counts) = encode_one(frame.as_bytes(), FrameKind::Complete);
            let took = started.elapsed();
            assert_eq!(counts.parse_errors, 0);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let sd = v["structured_data"].as_object().unwrap();
            let params: usize = sd.values().map(|p| p.as_object().unwrap().len()).sum();
            assert_eq!(params, n);
            // Quadratic took ~20 s here unoptimised; linear takes milliseconds.
            assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
        }
        // Order and grouping survive many repeats.
        let mut repeats = String::from("<14>1 - h a - - ");
        for i in 0..100 {
            repeats.push_str(&format!("[b{} x=\"{i}\"]", i % 3));
        }
        let (line, _) = encode_one(repeats.as_bytes(), FrameKind::Complete);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(line.contains(r#""structured_data":{"b0":{"x":["0","3","#));
        assert_eq!(v["structured_data"]["b2"]["x"][32], "98");
        assert_eq!(
            v["structured_data"]["b1"]["x"].as_array().unwrap().len(),
            33
        );
    }

    #[test]
    fn errors_and_truncation_are_recorded() {
        let (line, counts) = encode_one(b"garbage \xff", FrameKind::Complete);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["parse_error"].as_str().unwrap().contains("at byte"));
        assert_eq!(v["raw"], "garbage \u{fffd}");
        assert_eq!(v["raw_base64"], "Z2FyYmFnZSD/");
        assert_eq!(v["hostname"], serde_json::Value::Null);
        assert_eq!(counts.parse_errors, 1);

        let (line, counts) = encode_one(
            b"007 x",
            FrameKind::Error(crate::framing::FrameErrorKind::MsgLenLeadingZero),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["framing_error"], "msg_len_leading_zero");
        assert_eq!(v["raw"], "007 x");
        assert_eq!(counts.framing_errors, 1);

        let (line, counts) = encode_one(
            b"<14>1 - - app - - - cut",
            FrameKind::Truncated {
                reason: crate::framing::FrameErrorKind::FrameTooLong,
                declared_length: Some(99999),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "cut");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["truncation"], "frame_too_long");
        assert_eq!(v["declared_length"], 99999);
        assert_eq!(counts.truncated, 1);
    }

    #[test]
    fn k8s_fields_from_the_single_sd_walk_match_classify() {
        // The encoder picks the Kubernetes SD values up while writing the SD; it must find what
        // `Classifier::classify` finds, also when the SD takes the grouped (repeats) path.
        let frames: &[&[u8]] = &[
            br#"<14>1 - h k8s.event/a/b/c - - [kubernetes@47450 namespace="ns1" namespace_name="ns0" pod="p" object="o"] Started container"#,
            br#"<14>1 - h pod.log/a/b/c - - [x y="1"][kubernetes@47450 container="c1" container_name="c\"0" vm_id="v"] m"#,
            br#"<14>1 - h pod.log/a/b/c - - [kubernetes@47450 object_name="o" object_name="o2" vm_id="v"] m"#,
            br#"<14>1 - h k8s.event/a/b/ - - [kubernetes@47450 namespace="n"][kubernetes@47450 namespace_name="m" vm_id="v"] Killing"#,
            br#"<14>1 - h k8s.event/a/b/ - - [x a="1"][x a="2"][kubernetes@47450 object="q"] Killing"#,
            br#"<14>1 - h k8s.event - - - Killing"#,
            br#"<14>1 - h other - - [kubernetes@47450 namespace_name="ns0"] m"#,
        ];
        let classifier = Classifier::builtin();
        for frame in frames {
            let (line, _) = encode_one(frame, FrameKind::Complete);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let m = parse::parse(frame, Format::Auto).unwrap();
            match classifier.classify(&m) {
                None => assert!(v.get("k8s").is_none(), "{line}"),
                Some(k) => {
                    let k8s = &v["k8s"];
                    let field = |f: &Option<std::borrow::Cow<'_, str>>| {
                        f.as_deref().map_or(serde_json::Value::Null, |s| s.into())
                    };
                    assert_eq!(k8s["namespace"], field(&k.namespace), "{line}");
                    assert_eq!(k8s["object"], field(&k.object), "{line}");
                    assert_eq!(k8s["container"], field(&k.container), "{line}");
                    assert_eq!(k8s["vm_id"], field(&k.vm_id), "{line}");
                    assert_eq!(k8s["kind"], k.kind.as_str(), "{line}");
                }
            }
        }
    }

    #[test]
    fn lossy_matches_from_utf8_lossy() {
        for bytes in [
            &b""[..],
            b"plain",
            b"\xff",
            b"a\xffb\"c",
            b"\xe2\x82",
            b"\xe2\x82\xac\xf0\x9f\x98",
            b"\xc3\xa9\xc3",
            b"\xed\xa0\x80x\n",
        ] {
            let mut ours = BytesMut::new();
            write_lossy(&mut Out::plain(&mut ours), bytes);
            let mut reference = BytesMut::new();
            write_str(
                &mut Out::plain(&mut reference),
                &String::from_utf8_lossy(bytes),
            );
            assert_eq!(ours, reference, "{bytes:?}");
        }
    }

    #[test]
    fn param_values_are_unescaped_then_json_escaped() {
        // Every value of up to 6 octets over an alphabet with the SD and JSON specials,
        // against the chunk iterator + JSON escaping, for each value the parser accepts.
        let alphabet = [b'a', b'\\', b'"', b']', b'\n', b'x'];
        let mut checked = 0;
        for len in 0..=6u32 {
            for mut code in 0..alphabet.len().pow(len) {
                let mut raw = Vec::new();
                for _ in 0..len {
                    raw.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                let mut frame = b"<14>1 - - - - - [a v=\"".to_vec();
                frame.extend_from_slice(&raw);
                frame.extend_from_slice(b"\"]");
                let Ok(m) = parse::parse(&frame, Format::Auto) else {
                    continue;
                };
                let sd = m.structured_data.unwrap();
                let value = sd.element("a").unwrap().param("v").unwrap();
                let mut ours = BytesMut::new();
                write_param_value(&mut Out::plain(&mut ours), value.raw());
                let mut reference = BytesMut::new();
                reference.put_u8(b'"');
                for c in value.chunks() {
                    write_escaped(&mut Out::plain(&mut reference), c);
                }
                reference.put_u8(b'"');
                assert_eq!(ours, reference, "{:?}", value.raw());
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    /// The clean-prefix shortcuts change nothing: records of frames with `"`, `\\`, `]` and
    /// controls at every place of the header, SD names, values and MSG equal those written
    /// with every string scanned.
    #[test]
    fn clean_prefixes_write_the_same_records_as_full_scans() {
        let classifier = Classifier::builtin();
        let enc = Encoder::new(Format::Auto, &classifier);
        let ctx = RecordContext {
            received_at: "2026-11-26T00:00:00.000000Z",
            peer: None,
            peer_cert: None,
        };
        let base = "<14>1 2026-11-26T00:00:00Z host app/ns/obj/ p1 m1 [kubernetes@47450 namespace_name=\"ns\" object_name=\"obj\"][x@1 k=\"value\" k2=\"v2\"] message text here";
        let specials = ["\"", "\\", "\\\"", "\\]", "\n", "\t", "\u{1}", "]", "é"];
        let mut checked = 0;
        for pos in 0..base.len() {
            if !base.is_char_boundary(pos) {
                continue;
            }
            for sp in specials {
                let text = format!("{}{sp}{}", &base[..pos], &base[pos..]);
                let frame = Frame {
                    offset: 0,
                    data: bytes::Bytes::from(text.clone().into_bytes()),
                    kind: FrameKind::Complete,
                    wire_len: text.len() as u64,
                    dropped_before: 0,
                };
                let mut counts = BatchCounts::new(classifier.categories().len());
                let mut fast = BytesMut::new();
                enc.encode(&frame, &ctx, &mut fast, &mut counts);
                let mut slow = BytesMut::new();
                enc.encode_into(&frame, &ctx, &mut Out::plain(&mut slow), &mut counts);
                assert_eq!(fast, slow, "{text:?}");
                serde_json::from_slice::<serde_json::Value>(&fast)
                    .unwrap_or_else(|e| panic!("{e}: {text:?}"));
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn text_is_written_as_utf8_or_refused() {
        for text in [
            &b""[..],
            b"plain \"quoted\"\n",
            "caf\u{e9} \"x\" \u{1F600}\t".as_bytes(),
            b"ascii first then \xc3\xa9 and \"q\"",
            b"\xff",
            b"abcdefgh\"\xc3",
            b"\xc3\xa9\xff",
        ] {
            let mut ours = BytesMut::from(&b"prefix"[..]);
            let ok = write_text(&mut Out::plain(&mut ours), b"\"", text);
            match std::str::from_utf8(text) {
                Ok(s) => {
                    assert!(ok, "{text:?}");
                    let mut reference = BytesMut::from(&b"prefix"[..]);
                    write_str(&mut Out::plain(&mut reference), s);
                    assert_eq!(ours, reference, "{text:?}");
                }
                Err(_) => {
                    assert!(!ok, "{text:?}");
                    assert_eq!(&ours[..], b"prefix", "{text:?}");
                }
            }
        }
    }

    #[test]
    fn strips_one_line_end() {
        assert_eq!(strip_trailing_newline(b"a\r\n"), b"a");
        assert_eq!(strip_trailing_newline(b"a\n"), b"a");
        assert_eq!(strip_trailing_newline(b"a\n\n"), b"a\n");
        assert_eq!(strip_trailing_newline(b"a\r"), b"a\r");
        assert_eq!(strip_trailing_newline(b""), b"");
    }
}
