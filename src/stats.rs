//! Detail counts for operators (the admin listener, [`crate::admin`]): records per Kubernetes
//! namespace, framing errors and truncations by kind, and the last failure events.
//!
//! The hot path only touches [`BatchDetail`], owned by one connection's processor: fixed,
//! preallocated buffers (no allocation per message, no lock, no atomic). Once per batch
//! [`crate::metrics::Metrics::add`] merges it into the process-wide [`Detail`] under one short
//! lock. Everything is bounded: at most [`MAX_BATCH_NAMESPACES`] namespaces per batch and
//! [`MAX_NAMESPACES`] in the process (more are counted under [`OVERFLOW_NAMESPACE`]), and the
//! last [`FAILURE_RING`] failure events.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::classify::{Category, K8sKind};
use crate::framing::{Frame, FrameErrorKind};

/// Distinct namespaces one batch tracks; records of further ones count as [`OVERFLOW_NAMESPACE`].
pub const MAX_BATCH_NAMESPACES: usize = 64;
/// Slots of the per-batch namespace lookup cache.
const CACHE_SLOTS: usize = 128;
/// Bytes of namespace names one batch keeps (Kubernetes names are at most 63 bytes).
const BATCH_NAME_BYTES: usize = MAX_BATCH_NAMESPACES * 64;
/// Distinct namespaces the process tracks; further ones count as [`OVERFLOW_NAMESPACE`].
pub const MAX_NAMESPACES: usize = 2000;
/// Where records of namespaces past the limits are counted (also the label of the namespaces
/// past the top N in `/metrics`).
pub const OVERFLOW_NAMESPACE: &str = "other";
/// Failure events kept (per batch and in the process): the most recent ones.
pub const FAILURE_RING: usize = 50;
/// Bytes kept of a failure event's namespace, object and message.
const FAILURE_NS_BYTES: usize = 64;
const FAILURE_OBJECT_BYTES: usize = 128;
const FAILURE_MSG_BYTES: usize = 320;
const FAILURE_SLOT: usize = FAILURE_NS_BYTES + FAILURE_OBJECT_BYTES + FAILURE_MSG_BYTES;
/// Number of [`FrameErrorKind`]s.
pub const FRAME_ERROR_KINDS: usize = 8;

/// Every [`FrameErrorKind`], in index order (see [`frame_error_index`]).
pub const FRAME_ERROR_KIND_LIST: [FrameErrorKind; FRAME_ERROR_KINDS] = FrameErrorKind::ALL;

/// The index of `k` in [`FRAME_ERROR_KIND_LIST`].
pub fn frame_error_index(k: FrameErrorKind) -> usize {
    k.index()
}

/// Categories counted as failures by default (`[admin] failure_categories`).
pub const DEFAULT_FAILURE_CATEGORIES: [&str; 7] = [
    "err_image_pull",
    "back_off",
    "unhealthy",
    "failed_scheduling",
    "oom",
    "evicted",
    "node_not_ready",
];

/// One namespace's counts in a batch.
#[derive(Debug, Clone, Copy, Default)]
struct BatchNs {
    /// Name: `names[start..start + len]`.
    start: u32,
    len: u32,
    /// Kubernetes records (events and pod logs).
    records: u64,
    /// Where its per-category event counts start in `BatchDetail::ns_categories`.
    cats: u32,
}

/// Where a part of a failure event is in its frame (already cut to its length limit).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u16,
}

impl Span {
    /// The span of `part` in `frame`, at most `max` bytes (not cutting a UTF-8 sequence); empty
    /// when `part` is not inside `frame` (a value unescaped into its own buffer).
    fn of(frame: &[u8], part: &[u8], max: usize) -> Span {
        let (f, p) = (frame.as_ptr() as usize, part.as_ptr() as usize);
        if p < f || p + part.len() > f + frame.len() {
            return Span::default();
        }
        Span {
            start: (p - f) as u32,
            len: cut(part, max).len() as u16,
        }
    }

    /// The bytes of the span in `frame` (empty when out of range).
    fn get(self, frame: &[u8]) -> &[u8] {
        let start = self.start as usize;
        frame
            .get(start..start + usize::from(self.len))
            .unwrap_or_default()
    }
}

/// One failure event in a batch: which frame, and where its parts are in it (nothing is copied
/// on the hot path; [`Detail::add`] copies the text out of the batch's frames).
#[derive(Debug, Clone, Copy, Default)]
struct BatchFailure {
    frame: u32,
    category: u16,
    ns: Span,
    object: Span,
    msg: Span,
}

/// The lengths of a kept failure event's parts in its text slot.
#[derive(Debug, Clone, Copy, Default)]
struct Kept {
    ns_len: u16,
    object_len: u16,
    msg_len: u16,
}

/// What one batch saw, in preallocated buffers (see the module doc).
#[derive(Debug, Clone)]
pub struct BatchDetail {
    /// Number of categories of the classifier that counts.
    n_categories: usize,
    /// Per category: whether an event of it is a failure event.
    failure: Vec<bool>,
    names: Vec<u8>,
    namespaces: Vec<BatchNs>,
    /// `n_categories` counts per namespace entry.
    ns_categories: Vec<u64>,
    /// A direct-mapped cache: namespace hash → entry index + 1 (0 = none), so that a lookup
    /// is one comparison when namespaces interleave.
    cache: [u8; CACHE_SLOTS],
    /// Kubernetes records whose namespace did not fit (or had none): counted as overflow.
    overflow_records: u64,
    overflow_categories: Vec<u64>,
    /// Framing errors (not frames) by kind.
    pub frame_errors: [u64; FRAME_ERROR_KINDS],
    /// Truncated frames by reason.
    pub truncations: [u64; FRAME_ERROR_KINDS],
    failures: Vec<BatchFailure>,
    /// Failure events seen in the batch (the last [`FAILURE_RING`] are kept).
    failures_seen: usize,
}

impl BatchDetail {
    /// Buffers for a classifier with `n_categories` categories; no category is a failure until
    /// [`Self::set_failures`].
    pub fn new(n_categories: usize) -> BatchDetail {
        BatchDetail {
            n_categories,
            failure: vec![false; n_categories],
            names: Vec::with_capacity(BATCH_NAME_BYTES),
            namespaces: Vec::with_capacity(MAX_BATCH_NAMESPACES),
            ns_categories: Vec::with_capacity(MAX_BATCH_NAMESPACES * n_categories),
            cache: [0; CACHE_SLOTS],
            overflow_records: 0,
            overflow_categories: vec![0; n_categories],
            frame_errors: [0; FRAME_ERROR_KINDS],
            truncations: [0; FRAME_ERROR_KINDS],
            failures: vec![BatchFailure::default(); FAILURE_RING],
            failures_seen: 0,
        }
    }

    /// Which categories (by classifier index) are failures: their events are kept as failure
    /// events.
    pub fn set_failures(&mut self, failure: &[bool]) {
        for (i, f) in self.failure.iter_mut().enumerate() {
            *f = failure.get(i).copied().unwrap_or(false);
        }
    }

    /// Counts one Kubernetes record; keeps it as a failure event when its category is one.
    /// `frame` is the record's frame, number `frame_index` of the batch; `namespace`, `object`
    /// and `msg` borrow from it (a failure event is kept as their places in the frame).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn k8s(
        &mut self,
        kind: K8sKind,
        category: Option<Category>,
        namespace: Option<&str>,
        object: Option<&str>,
        msg: &[u8],
        frame: &[u8],
        frame_index: u64,
    ) {
        let cat = category
            .map(|c| usize::from(c.0))
            .filter(|&c| c < self.n_categories);
        let counts = match namespace.and_then(|ns| self.entry(ns)) {
            Some(i) => {
                self.namespaces[i].records += 1;
                let base = self.namespaces[i].cats as usize;
                &mut self.ns_categories[base..base + self.n_categories]
            }
            None => {
                self.overflow_records += 1;
                &mut self.overflow_categories[..]
            }
        };
        if kind != K8sKind::Event {
            return;
        }
        let Some(c) = cat else { return };
        counts[c] += 1;
        // (A BatchDetail built by Default has no ring.)
        if self.failure[c] && self.failures.len() == FAILURE_RING {
            let slot = self.failures_seen % FAILURE_RING;
            self.failures_seen += 1;
            self.failures[slot] = BatchFailure {
                frame: u32::try_from(frame_index).unwrap_or(u32::MAX),
                category: c as u16,
                ns: Span::of(frame, namespace.unwrap_or("").as_bytes(), FAILURE_NS_BYTES),
                object: Span::of(frame, object.unwrap_or("").as_bytes(), FAILURE_OBJECT_BYTES),
                msg: Span::of(
                    frame,
                    crate::record::strip_trailing_newline(msg),
                    FAILURE_MSG_BYTES,
                ),
            };
        }
    }

    /// The entry of `ns`, added when there is room.
    #[inline]
    fn entry(&mut self, ns: &str) -> Option<usize> {
        // Length first: most entries differ in length, and that spares a memcmp call.
        let name = |e: &BatchNs, names: &[u8]| -> bool {
            e.len as usize == ns.len()
                && &names[e.start as usize..(e.start + e.len) as usize] == ns.as_bytes()
        };
        let b = ns.as_bytes();
        let h = (b.len()
            ^ usize::from(b.first().copied().unwrap_or(0)) << 1
            ^ usize::from(b.last().copied().unwrap_or(0)) << 3
            ^ usize::from(b.get(b.len() / 2).copied().unwrap_or(0)))
            % CACHE_SLOTS;
        if let Some(i) = usize::from(self.cache[h]).checked_sub(1) {
            if self.namespaces.get(i).is_some_and(|e| name(e, &self.names)) {
                return Some(i);
            }
        }
        if let Some(i) = self.namespaces.iter().position(|e| name(e, &self.names)) {
            self.cache[h] = (i + 1) as u8;
            return Some(i);
        }
        if self.namespaces.len() == MAX_BATCH_NAMESPACES
            || self.names.len() + ns.len() > BATCH_NAME_BYTES
        {
            return None;
        }
        let cats = self.ns_categories.len();
        self.ns_categories
            .extend(std::iter::repeat_n(0, self.n_categories));
        self.namespaces.push(BatchNs {
            start: self.names.len() as u32,
            len: ns.len() as u32,
            records: 0,
            cats: cats as u32,
        });
        self.names.extend_from_slice(ns.as_bytes());
        let i = self.namespaces.len() - 1;
        self.cache[h] = (i + 1) as u8;
        Some(i)
    }

    /// Back to empty, keeping the buffers.
    pub fn clear(&mut self) {
        self.names.clear();
        self.namespaces.clear();
        self.ns_categories.clear();
        self.cache = [0; CACHE_SLOTS];
        self.overflow_records = 0;
        self.overflow_categories.iter_mut().for_each(|n| *n = 0);
        self.frame_errors = [0; FRAME_ERROR_KINDS];
        self.truncations = [0; FRAME_ERROR_KINDS];
        self.failures_seen = 0;
    }

    /// Whether there is anything to merge.
    fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.overflow_records == 0
            && self.failures_seen == 0
            && self.frame_errors.iter().all(|&n| n == 0)
            && self.truncations.iter().all(|&n| n == 0)
    }
}

impl Default for BatchDetail {
    /// No buffers, no categories (allocates nothing; [`BatchDetail::new`] preallocates).
    fn default() -> Self {
        BatchDetail {
            n_categories: 0,
            failure: Vec::new(),
            names: Vec::new(),
            namespaces: Vec::new(),
            ns_categories: Vec::new(),
            cache: [0; CACHE_SLOTS],
            overflow_records: 0,
            overflow_categories: Vec::new(),
            frame_errors: [0; FRAME_ERROR_KINDS],
            truncations: [0; FRAME_ERROR_KINDS],
            failures: Vec::new(),
            failures_seen: 0,
        }
    }
}

/// The longest prefix of `b` of at most `max` bytes that does not cut a UTF-8 sequence.
fn cut(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    let mut end = max;
    while end > 0 && (b[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &b[..end]
}

/// One namespace's counts in the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceCounts {
    /// Kubernetes records (events and pod logs).
    pub records: u64,
    /// Events per category, indexed by metrics category slot.
    pub categories: Vec<u64>,
}

impl NamespaceCounts {
    /// Events of the category in `slot`.
    pub fn category(&self, slot: usize) -> u64 {
        self.categories.get(slot).copied().unwrap_or(0)
    }
}

/// A failure event, as shown on the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureEvent {
    /// When the read that carried it completed.
    pub at: SystemTime,
    /// Metrics category slot.
    pub category: usize,
    /// Namespace (`""` when the record had none).
    pub namespace: String,
    /// Object (pod, node ...).
    pub object: String,
    /// The event text (its start).
    pub message: String,
}

/// A failure event as kept: when, metrics category slot, lengths, text slot.
type FailureSlot = (SystemTime, usize, Kept, Box<[u8; FAILURE_SLOT]>);

/// Process-wide detail counts (merged once per batch).
#[derive(Debug, Default)]
pub struct Detail {
    inner: Mutex<DetailInner>,
}

#[derive(Debug, Default)]
struct DetailInner {
    namespaces: HashMap<String, NamespaceCounts>,
    overflow: NamespaceCounts,
    frame_errors: [u64; FRAME_ERROR_KINDS],
    truncations: [u64; FRAME_ERROR_KINDS],
    /// The last failure events as copied from the batches (fixed-size slots, buffers reused:
    /// no allocation per event once full), oldest first; made into [`FailureEvent`]s only by
    /// [`Detail::snapshot`].
    failures: VecDeque<FailureSlot>,
    /// Failure events ever seen.
    failures_total: u64,
}

/// A copy of [`Detail`] at one moment.
#[derive(Debug, Clone, Default)]
pub struct DetailSnapshot {
    /// Per namespace (at most [`MAX_NAMESPACES`]).
    pub namespaces: Vec<(String, NamespaceCounts)>,
    /// Records of namespaces past the limits, or without one.
    pub overflow: NamespaceCounts,
    /// Framing errors by kind ([`FRAME_ERROR_KIND_LIST`] order).
    pub frame_errors: [u64; FRAME_ERROR_KINDS],
    /// Truncated frames by reason ([`FRAME_ERROR_KIND_LIST`] order).
    pub truncations: [u64; FRAME_ERROR_KINDS],
    /// The last failure events, oldest first.
    pub failures: Vec<FailureEvent>,
    /// Failure events ever seen.
    pub failures_total: u64,
}

fn add_slots(into: &mut Vec<u64>, from: &[u64], slots: Option<&[u16]>) {
    for (i, &n) in from.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let s = slots.map_or(i, |s| s.get(i).map_or(i, |&s| usize::from(s)));
        if into.len() <= s {
            into.resize(s + 1, 0);
        }
        into[s] += n;
    }
}

impl Detail {
    /// Merges one batch; `slots` maps the batch's category indices to metrics slots (identity
    /// when `None`); `frames` are the batch's frames (the failure events' text is in them).
    pub fn add(&self, b: &BatchDetail, slots: Option<&[u16]>, frames: &[Frame]) {
        if b.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let Ok(mut d) = self.inner.lock() else {
            return;
        };
        let d = &mut *d;
        for i in 0..FRAME_ERROR_KINDS {
            d.frame_errors[i] += b.frame_errors[i];
            d.truncations[i] += b.truncations[i];
        }
        for e in &b.namespaces {
            let name = &b.names[e.start as usize..(e.start + e.len) as usize];
            let name = String::from_utf8_lossy(name);
            let cats = &b.ns_categories[e.cats as usize..e.cats as usize + b.n_categories];
            let full = d.namespaces.len() >= MAX_NAMESPACES;
            let c = match d.namespaces.get_mut(name.as_ref()) {
                Some(c) => c,
                None if full => &mut d.overflow,
                None => d.namespaces.entry(name.into_owned()).or_default(),
            };
            c.records += e.records;
            add_slots(&mut c.categories, cats, slots);
        }
        d.overflow.records += b.overflow_records;
        add_slots(&mut d.overflow.categories, &b.overflow_categories, slots);
        let kept = b.failures_seen.min(FAILURE_RING);
        for k in 0..kept {
            // Oldest first: the ring's next slot is the oldest once it wrapped.
            let slot = (b.failures_seen - kept + k) % FAILURE_RING;
            let f = b.failures[slot];
            let frame = frames
                .get(f.frame as usize)
                .map_or(&[][..], |fr| &fr.data[..]);
            let (ns, object, msg) = (f.ns.get(frame), f.object.get(frame), f.msg.get(frame));
            let category = usize::from(f.category);
            let category = slots.map_or(category, |s| {
                s.get(category).map_or(category, |&s| usize::from(s))
            });
            // Reuse the oldest slot's buffer once the ring is full.
            let mut buf = match d.failures.len() {
                FAILURE_RING => match d.failures.pop_front() {
                    Some((_, _, _, b)) => b,
                    None => Box::new([0; FAILURE_SLOT]),
                },
                _ => Box::new([0; FAILURE_SLOT]),
            };
            let m = FAILURE_NS_BYTES + FAILURE_OBJECT_BYTES;
            buf[..ns.len()].copy_from_slice(ns);
            buf[FAILURE_NS_BYTES..FAILURE_NS_BYTES + object.len()].copy_from_slice(object);
            buf[m..m + msg.len()].copy_from_slice(msg);
            let kept = Kept {
                ns_len: ns.len() as u16,
                object_len: object.len() as u16,
                msg_len: msg.len() as u16,
            };
            d.failures.push_back((now, category, kept, buf));
        }
        d.failures_total += b.failures_seen as u64;
    }

    /// A copy of everything (for a scrape or the status page).
    pub fn snapshot(&self) -> DetailSnapshot {
        let Ok(d) = self.inner.lock() else {
            return DetailSnapshot::default();
        };
        DetailSnapshot {
            namespaces: d
                .namespaces
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            overflow: d.overflow.clone(),
            frame_errors: d.frame_errors,
            truncations: d.truncations,
            failures: d
                .failures
                .iter()
                .map(|(at, category, f, text)| {
                    let m = FAILURE_NS_BYTES + FAILURE_OBJECT_BYTES;
                    let s =
                        |r: std::ops::Range<usize>| String::from_utf8_lossy(&text[r]).into_owned();
                    FailureEvent {
                        at: *at,
                        category: *category,
                        namespace: s(0..usize::from(f.ns_len)),
                        object: s(FAILURE_NS_BYTES..FAILURE_NS_BYTES + usize::from(f.object_len)),
                        message: s(m..m + usize::from(f.msg_len)),
                    }
                })
                .collect(),
            failures_total: d.failures_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counts_namespaces_and_keeps_last_failures() {
        use crate::framing::{Frame, FrameKind};
        // The failure events' text is read from the batch's frames.
        let frames: Vec<Frame> = (0..60)
            .map(|i| Frame {
                data: bytes::Bytes::from(format!("web pod-1 failure {i}\n")),
                kind: FrameKind::Complete,
                offset: 0,
                wire_len: 0,
                dropped_before: 0,
            })
            .collect();
        let mut b = BatchDetail::new(3);
        b.set_failures(&[false, true, false]);
        for (i, f) in frames.iter().enumerate() {
            let text = std::str::from_utf8(&f.data).unwrap();
            b.k8s(
                K8sKind::Event,
                Some(Category(1)),
                Some(&text[..3]),
                Some(&text[4..9]),
                &text.as_bytes()[10..],
                &f.data,
                i as u64,
            );
        }
        b.k8s(
            K8sKind::PodLog,
            None,
            Some("db"),
            None,
            b"log line",
            b"",
            60,
        );
        b.k8s(K8sKind::Event, Some(Category(0)), None, None, b"x", b"", 61);
        let d = Detail::default();
        d.add(&b, None, &frames);
        let s = d.snapshot();
        let web = s.namespaces.iter().find(|(n, _)| n == "web").unwrap();
        assert_eq!(web.1.records, 60);
        assert_eq!(web.1.category(1), 60);
        let db = s.namespaces.iter().find(|(n, _)| n == "db").unwrap();
        assert_eq!((db.1.records, db.1.category(1)), (1, 0));
        assert_eq!((s.overflow.records, s.overflow.category(0)), (1, 1));
        assert_eq!(s.failures.len(), FAILURE_RING);
        assert_eq!(s.failures_total, 60);
        assert_eq!(s.failures[0].message, "failure 10");
        assert_eq!(s.failures[49].message, "failure 59");
        assert_eq!(s.failures[49].namespace, "web");
        assert_eq!(s.failures[49].object, "pod-1");
        // Mapped to other slots (a reloaded classifier); a value outside the frame is empty.
        b.clear();
        let f = &frames[0];
        b.k8s(
            K8sKind::Event,
            Some(Category(2)),
            Some("web"),
            None,
            b"x",
            &f.data,
            0,
        );
        d.add(&b, Some(&[0, 1, 7]), &frames);
        let s = d.snapshot();
        let web = s.namespaces.iter().find(|(n, _)| n == "web").unwrap();
        assert_eq!((web.1.records, web.1.category(7)), (61, 1));
        assert_eq!(Span::of(&f.data, b"elsewhere", 64).get(&f.data), b"");
    }

    #[test]
    fn batch_namespaces_are_bounded() {
        let mut b = BatchDetail::new(1);
        for i in 0..(MAX_BATCH_NAMESPACES + 10) {
            b.k8s(
                K8sKind::PodLog,
                None,
                Some(&format!("ns-{i}")),
                None,
                b"",
                b"",
                0,
            );
        }
        assert_eq!(b.namespaces.len(), MAX_BATCH_NAMESPACES);
        assert_eq!(b.overflow_records, 10);
        // Again, in another order: every name finds its entry, whatever the cache holds.
        for i in (0..(MAX_BATCH_NAMESPACES + 10)).rev() {
            b.k8s(
                K8sKind::PodLog,
                None,
                Some(&format!("ns-{i}")),
                None,
                b"",
                b"",
                0,
            );
        }
        assert_eq!(b.namespaces.len(), MAX_BATCH_NAMESPACES);
        assert!(b.namespaces.iter().all(|e| e.records == 2));
        assert_eq!(b.overflow_records, 20);
        assert_eq!(cut("aé".as_bytes(), 2), b"a");
    }
}
