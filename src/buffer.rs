//! Disk buffer: a per-output segmented write-ahead log with at-least-once delivery.
//!
//! An output with a buffer (`[output.buffer]`, on by default for network outputs) runs as
//! three parts joined by a shared state (`Shared`):
//!
//! - the **writer** (an OS thread, blocking file I/O) takes the batches from the output's router
//!   queue, appends what the output wants of each to the log as one *entry*, and hands the
//!   in-memory batch to the output through a bounded window. While the log holds `max_bytes`
//!   it waits: the router queue fills and the listeners stop reading (TCP backpressure);
//!   nothing is dropped.
//! - the **reader** (the output's task, [`run`]) gives the output the in-memory batches while it
//!   keeps up, and reads entries back from the log after a restart or when the window
//!   overflowed: the writer waits up to 20 ms for room in the window (a busy output
//!   pushes back as without a buffer), then leaves batches out of it (never out of the log)
//!   until the reader has caught up; a window the reader took nothing from for 20 ms is
//!   emptied (a stalled output holds no batches, nor their share of the in-flight budget). Records are
//!   removed only once the output *confirmed* them ([`Output::confirmed`]): the position up to
//!   which everything is confirmed is written to the `checkpoint` file (atomically: a temporary
//!   file renamed over it) at most every 200 ms, and segment files wholly before it are deleted.
//! - the **sync** task `fdatasync`s every `fsync_interval_ms` what was written since its last
//!   tick: segments closed meanwhile (then the folder) and the live segment.
//!
//! **Format.** Positions are bytes in one logical stream; a segment file is named after the
//! position of its first byte (`00000000000000001234.seg`, 20 digits) and rolls over at about
//! `max_bytes / 8`. An entry is `[len u32 LE][crc32 u32 LE][payload]`, the CRC-32 (IEEE) over
//! the payload. The payload is `content u8` (0: JSON lines, 1: frames), the time it was
//! appended (Unix ms, u64 LE), the record count `n` (u32 LE), `n` descriptors (JSON: the line's
//! length, u32; frames: kind u8, reason u8, declared length u64 (`u64::MAX` = none), length
//! u32), then the lines' or frames' bytes back to back. Replay rebuilds a [`Batch`] of those
//! records (mask = this output's bit) and calls the same [`Output::write_entry`].
//!
//! **Entry ids.** The folder has an id of its own, 16 hex digits drawn at its first use and kept
//! in its `instance` file. With the entry's position and append time it names the entry's
//! records across restarts ([`EntryId`], handed to the output with every batch, from memory or
//! from the log alike): a destination that deduplicates by id (JetStream's `Nats-Msg-Id`) can
//! recognise a record delivered again after a restart.
//!
//! **Startup** locks the folder (an exclusive `flock` on its `lock` file, held while the buffer
//! lives: a second process on the same folder is refused with a clear error), reads the
//! checkpoint, deletes segments wholly before it, and checks every entry
//! after it (length and CRC). The first damaged entry of a segment (a torn write at the end of
//! the file, a flipped bit) is logged with the file and offset and counted
//! (`buffer_corrupt`); the rest of that file is skipped, the entries before it are delivered.
//! Writing goes on in a new segment file.
//!
//! **Durability.** Every entry is written (`write(2)`) before the output gets its batch, so a
//! killed process (`kill -9`) loses nothing: the kernel has the bytes. Against power loss only
//! what was `fdatasync`ed is safe: at most `fsync_interval_ms` of records can be lost (0 syncs
//! every entry). Records confirmed but not yet in the checkpoint when the process dies are
//! delivered again after the restart (duplicates, never loss).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::BufferConfig;
use crate::framing::{Frame, FrameErrorKind, FrameKind};
use crate::metrics::{unix_ms, Metrics, OutputMetrics};
use crate::output::{retry_flush, write_chunks, Output, Probe};
use crate::route::{Batch, Line, Receiver};

/// Bytes of an entry header: length and CRC.
const HEADER: usize = 8;
/// Largest payload accepted when reading (a longer length field is damage).
const MAX_ENTRY: u64 = 1 << 30;
/// Segment file suffix.
const SEGMENT_SUFFIX: &str = ".seg";
/// The checkpoint file and its first word.
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
/// The file locked while a process uses the folder.
const LOCK: &str = "lock";
const CHECKPOINT_MAGIC: &str = "syslog-sink-buffer-v1";
/// The folder's own id (16 hex digits), kept across restarts; see [`EntryId`].
const INSTANCE: &str = "instance";
const INSTANCE_TMP: &str = "instance.tmp";
/// The checkpoint is written at most this often (and at shutdown, and when the writer waits
/// for room).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Bytes read back from the log at a time.
const READ_CHUNK: u64 = 1 << 20;
/// Smallest and largest segment size.
const MIN_SEGMENT: u64 = 16 << 10;
const MAX_SEGMENT: u64 = 128 << 20;
/// How long the writer waits for room in the in-memory window before it lets the output fall
/// behind and read from the log (so a stalled output does not stop the log from filling).
const WINDOW_WAIT: Duration = Duration::from_millis(20);
/// At most one log line per this interval for repeated write errors.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Payload content: JSON lines.
const CONTENT_JSON: u8 = 0;
/// Payload content: received frames (the `syslog` output).
const CONTENT_FRAMES: u8 = 1;

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One segment file.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Position just past its last valid entry (for the live segment: the write position).
    end: u64,
    /// Bytes of the file.
    file_len: u64,
}

/// What the writer, the reader and the sync task share.
#[derive(Debug)]
struct State {
    /// Segment files by start position.
    segments: BTreeMap<u64, Seg>,
    /// Start of the segment being written.
    live: u64,
    live_file: Option<Arc<File>>,
    /// End of the last entry written.
    write_pos: u64,
    /// Written and `fdatasync`ed up to here.
    synced_pos: u64,
    /// Segments closed since the last sync (the sync task syncs them, then the folder).
    to_sync: Vec<Arc<File>>,
    /// Confirmed up to here, as written in the checkpoint file.
    checkpoint: u64,
    /// Bytes of all segment files.
    disk_bytes: u64,
    /// Records in the log not yet confirmed.
    records: u64,
    /// The writer waits for room.
    writer_waiting: bool,
    /// The router queue closed and every batch is in the log.
    writer_done: bool,
    /// The reader (output task) ended: the writer stops too.
    reader_gone: bool,
    /// The in-memory window: batches appended to the log, for the reader to take without
    /// reading them back. Cleared when the writer gives up waiting for room in it, so that a
    /// stalled output holds no batch (nor its share of the in-flight budget) in memory.
    window: VecDeque<Item>,
    /// The writer gave up waiting for room in the window: batches go to the log only, until
    /// the reader has caught up with it.
    overflow: bool,
    /// The reader's cursor: everything before it was given to the output.
    read_pos: u64,
    /// When the reader last took a batch from the window.
    last_take: Instant,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    segment_bytes: u64,
    /// `None`: sync after every entry.
    fsync_every: Option<Duration>,
    frames: bool,
    /// The folder's id (the `instance` file).
    instance: String,
    /// Most batches in the in-memory window.
    window_cap: usize,
    state: Mutex<State>,
    /// Signalled when room is made (segments deleted) or the reader ends.
    room: Condvar,
    /// Signalled when an entry is appended or the writer ends.
    data: Notify,
    metrics: Arc<Metrics>,
    index: usize,
}

impl Shared {
    fn m(&self) -> Option<&OutputMetrics> {
        self.metrics.outputs.get(self.index)
    }

    fn segment_path(&self, start: u64) -> PathBuf {
        segment_path(&self.dir, start)
    }

    /// Publishes the gauges of `st`.
    fn gauges(&self, st: &State) {
        if let Some(m) = self.m() {
            m.buffer_bytes.store(st.disk_bytes, Relaxed);
            m.buffer_records.store(st.records, Relaxed);
        }
    }

    /// Removes the segments wholly confirmed (not the live one) from `st`; returns their paths.
    fn collect(&self, st: &mut State) -> Vec<PathBuf> {
        let done: Vec<u64> = st
            .segments
            .iter()
            .filter(|(&s, g)| s != st.live && g.end <= st.checkpoint)
            .map(|(&s, _)| s)
            .collect();
        let mut paths = Vec::new();
        for s in done {
            if let Some(g) = st.segments.remove(&s) {
                st.disk_bytes = st.disk_bytes.saturating_sub(g.file_len);
                paths.push(self.segment_path(s));
            }
        }
        self.gauges(st);
        paths
    }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}{SEGMENT_SUFFIX}"))
}

fn remove_files(name: &str, paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(output = %name, file = %p.display(), error = %e,
                    "disk buffer: cannot delete a confirmed segment file");
            }
        }
    }
}

/// One batch in the log: where it is, what it holds.
#[derive(Debug)]
struct Item {
    batch: Arc<Batch>,
    start: u64,
    end: u64,
    records: u64,
    /// When it was appended (Unix ms).
    appended: u64,
}

/// Names the records of one log entry for good: the same when the entry is delivered again
/// after a restart (from the log instead of memory), different for any other entry of any
/// buffer folder. The buffer hands it to its output with the entry's batch
/// ([`Output::write_entry`]); the `nats` output makes its `Nats-Msg-Id`s of it, so that
/// JetStream stores a replayed record once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryId<'a> {
    /// The folder's id: 16 hex digits drawn when the folder was first used, kept in its
    /// `instance` file (a new folder, or a lost file, gets a new one).
    pub buffer: &'a str,
    /// The entry's position in the log.
    pub position: u64,
    /// When it was appended (Unix ms). Positions are written again only when the end of the
    /// log was lost after its entries were delivered (a power loss before `fdatasync`, segment
    /// files deleted by hand): the new entries there differ by it.
    pub appended: u64,
}

/// A damaged entry: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the entry in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// An output's disk buffer, opened and checked ([`DiskBuffer::open`]); [`run`] starts it.
#[derive(Debug)]
pub struct DiskBuffer {
    shared: Arc<Shared>,
    live: File,
    /// Where the reader starts: the checkpoint.
    cursor: u64,
    /// The folder's `lock` file, locked (`flock`, exclusive) from `open` until the output's
    /// task ends (the reader owns it then: when it ends the writer is done or the process is
    /// exiting), so that a second process on the same folder is refused instead of
    /// corrupting it, and a restart within one process finds the folder free.
    lock: File,
}

/// Entries of a log folder after its checkpoint, as startup sees them (for tests and tools).
#[derive(Debug, Default)]
pub struct Scan {
    /// The checkpoint position.
    pub checkpoint: u64,
    /// Per segment file after the checkpoint: its path, and per valid entry its file offset and
    /// batch.
    pub segments: Vec<(PathBuf, Vec<(u64, Batch)>)>,
    /// Damaged entries found (one per segment at most).
    pub damage: Vec<Damage>,
}

/// Reads a buffer folder without changing it: the checkpoint, and every valid entry after it
/// (`frames`: the content an output of that kind writes; `bit` becomes each line's mask).
pub fn scan(dir: &Path, frames: bool, bit: u64) -> io::Result<Scan> {
    let checkpoint = read_checkpoint(dir)?.unwrap_or(0);
    let mut out = Scan {
        checkpoint,
        ..Scan::default()
    };
    for (start, path) in list_segments(dir)? {
        let len = fs::metadata(&path)?.len();
        if start + len <= checkpoint {
            continue;
        }
        let from = checkpoint.saturating_sub(start).min(len);
        let mut entries = Vec::new();
        let r = scan_file(&path, from, len, frames, bit, |off, b| {
            entries.push((off, b));
        })?;
        if let Some(d) = r.damage {
            out.damage.push(d);
        }
        out.segments.push((path, entries));
    }
    Ok(out)
}

/// What scanning one segment file found.
#[derive(Debug, Default)]
struct FileScan {
    /// File offset just past the last valid entry.
    valid_end: u64,
    records: u64,
    first_appended: Option<u64>,
    damage: Option<Damage>,
}

/// Reads the entries of `path` from offset `from` to `len`, calling `each` with every valid
/// one; stops at the first damaged entry.
fn scan_file(
    path: &Path,
    from: u64,
    len: u64,
    frames: bool,
    bit: u64,
    mut each: impl FnMut(u64, Batch),
) -> io::Result<FileScan> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::with_capacity(256 << 10, f);
    let mut pos = from;
    let mut out = FileScan {
        valid_end: from,
        ..FileScan::default()
    };
    while pos < len {
        let decoded = read_entry(&mut r, len - pos)
            .and_then(|(payload, total)| decode(payload, frames, bit).map(|d| (d, total)));
        match decoded {
            Ok(((batch, appended), total)) => {
                out.records += batch.lines.len() as u64;
                out.first_appended.get_or_insert(appended);
                each(pos, batch);
                pos += total;
                out.valid_end = pos;
            }
            Err(reason) => {
                out.damage = Some(Damage {
                    file: path.to_path_buf(),
                    offset: pos,
                    reason,
                });
                break;
            }
        }
    }
    Ok(out)
}

/// Reads one entry (at most `avail` bytes): its payload and its size with the header.
fn read_entry(r: &mut impl Read, avail: u64) -> Result<(Bytes, u64), String> {
    if avail < HEADER as u64 {
        return Err(format!(
            "torn entry: {avail} bytes left, shorter than an entry header"
        ));
    }
    let mut h = [0u8; HEADER];
    r.read_exact(&mut h)
        .map_err(|e| format!("read failed: {e}"))?;
    let len = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_ENTRY || HEADER as u64 + len > avail {
        return Err(format!(
            "torn or corrupt entry: length {len} goes past the end of the data ({} bytes left)",
            avail - HEADER as u64
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(|e| format!("read failed: {e}"))?;
    let actual = crc32fast::hash(&payload);
    if actual != crc {
        return Err(format!(
            "corrupt entry: checksum {actual:08x}, header says {crc:08x}"
        ));
    }
    Ok((Bytes::from(payload), HEADER as u64 + len))
}

/// The on-disk code of a frame error kind (its [`FrameErrorKind::index`]).
fn error_code(k: FrameErrorKind) -> u8 {
    k.index() as u8
}

fn error_kind(c: u8) -> Option<FrameErrorKind> {
    FrameErrorKind::ALL.get(usize::from(c)).copied()
}

/// The entry of the records of `batch` that `bit` wants (JSON lines, or with `frames` their
/// frames), without copying their bytes: `head` gets the entry header and the record
/// descriptors, `parts` the records' bytes (slices of the batch); the entry is `head` then
/// `parts`. Returns how many records it holds (0: nothing added).
fn encode_parts(
    head: &mut Vec<u8>,
    parts: &mut Vec<Bytes>,
    batch: &Batch,
    bit: u64,
    frames: bool,
    appended: u64,
) -> u64 {
    head.clear();
    let first_part = parts.len();
    head.extend_from_slice(&[0u8; HEADER]);
    head.push(if frames { CONTENT_FRAMES } else { CONTENT_JSON });
    head.extend_from_slice(&appended.to_le_bytes());
    let n_at = head.len();
    head.extend_from_slice(&0u32.to_le_bytes());
    let mut n: u32 = 0;
    if frames {
        let wanted = batch
            .lines
            .iter()
            .zip(&batch.frames)
            .filter(|(l, _)| l.mask & bit != 0)
            .map(|(_, f)| f);
        for f in wanted {
            let (kind, reason, declared) = match f.kind {
                FrameKind::Complete => (0u8, 0u8, u64::MAX),
                FrameKind::Truncated {
                    reason,
                    declared_length,
                } => (1, error_code(reason), declared_length.unwrap_or(u64::MAX)),
                FrameKind::Error(k) => (2, error_code(k), u64::MAX),
            };
            head.push(kind);
            head.push(reason);
            head.extend_from_slice(&declared.to_le_bytes());
            head.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
            parts.push(f.data.clone());
            n += 1;
        }
    } else {
        let mut start = 0u32;
        for l in &batch.lines {
            if l.mask & bit != 0 {
                head.extend_from_slice(&(l.end - start).to_le_bytes());
                n += 1;
            }
            start = l.end;
        }
        parts.extend(batch.runs(bit).map(|(run, _)| run));
    }
    if n == 0 {
        head.clear();
        parts.truncate(first_part);
        return 0;
    }
    head[n_at..n_at + 4].copy_from_slice(&n.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[HEADER..]);
    let mut len = head.len() - HEADER;
    for p in &parts[first_part..] {
        crc.update(p);
        len += p.len();
    }
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    u64::from(n)
}

/// [`encode_parts`] into one buffer (appended to `buf`).
#[cfg(test)]
fn encode(buf: &mut Vec<u8>, batch: &Batch, bit: u64, frames: bool, appended: u64) -> u64 {
    let (mut head, mut parts) = (Vec::new(), Vec::new());
    let n = encode_parts(&mut head, &mut parts, batch, bit, frames, appended);
    if n > 0 {
        buf.extend_from_slice(&head);
        parts.iter().for_each(|p| buf.extend_from_slice(p));
    }
    n
}

/// The batch an entry's payload holds (every line's mask `bit`), and when it was appended.
/// The batch's bytes are slices of `payload` (no copy).
fn decode(mut p: Bytes, frames: bool, bit: u64) -> Result<(Batch, u64), String> {
    let bad = |what: &str| Err(format!("corrupt entry: {what}"));
    if p.len() < 13 {
        return bad("payload shorter than its header");
    }
    let content = p.get_u8();
    let want = if frames { CONTENT_FRAMES } else { CONTENT_JSON };
    if content != want {
        return Err(format!(
            "entry holds {} but this output needs {} (was the output's type changed?)",
            if content == CONTENT_FRAMES {
                "frames"
            } else {
                "JSON lines"
            },
            if frames { "frames" } else { "JSON lines" }
        ));
    }
    let appended = p.get_u64_le();
    let n = p.get_u32_le() as usize;
    let desc = if frames { 14 } else { 4 };
    if n == 0 || n.saturating_mul(desc) > p.len() {
        return bad("record count does not fit the entry");
    }
    let mut batch = Batch {
        all: bit,
        any: bit,
        ..Batch::default()
    };
    batch.lines.reserve(n);
    let blob_at = n * desc;
    let mut blob = p.slice(blob_at..);
    if frames {
        batch.frames.reserve(n);
        for _ in 0..n {
            let (kind, reason, declared, len) = (
                p.get_u8(),
                p.get_u8(),
                p.get_u64_le(),
                p.get_u32_le() as usize,
            );
            if len > blob.len() {
                return bad("a frame goes past the entry");
            }
            let declared = (declared != u64::MAX).then_some(declared);
            let kind = match (kind, error_kind(reason)) {
                (0, _) => FrameKind::Complete,
                (1, Some(reason)) => FrameKind::Truncated {
                    reason,
                    declared_length: declared,
                },
                (2, Some(k)) => FrameKind::Error(k),
                _ => return bad("unknown frame kind"),
            };
            let data = blob.split_to(len);
            batch.frames.push(Frame {
                offset: 0,
                wire_len: data.len() as u64,
                data,
                kind,
                dropped_before: 0,
            });
            batch.lines.push(Line { end: 0, mask: bit });
        }
    } else {
        let json = blob.clone();
        let mut end = 0usize;
        for _ in 0..n {
            end += p.get_u32_le() as usize;
            if end > json.len() {
                return bad("a line goes past the entry");
            }
            batch.lines.push(Line {
                end: end as u32,
                mask: bit,
            });
        }
        blob.advance(end);
        batch.json = json.slice(..end);
    }
    if !blob.is_empty() {
        return bad("bytes after the last record");
    }
    Ok((batch, appended))
}

fn read_checkpoint(dir: &Path) -> io::Result<Option<u64>> {
    let text = match fs::read_to_string(dir.join(CHECKPOINT)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let pos = text
        .strip_prefix(CHECKPOINT_MAGIC)
        .and_then(|r| r.trim().parse::<u64>().ok());
    match pos {
        Some(p) => Ok(Some(p)),
        None => {
            tracing::warn!(dir = %dir.display(), content = %text.escape_debug(),
                "disk buffer: checkpoint file unreadable; delivering the whole buffer again (duplicates possible)");
            Ok(None)
        }
    }
}

/// Writes the checkpoint atomically: a temporary file, synced, renamed over it (so that after a
/// power loss the checkpoint is the old one or the new one, never an empty file, which would
/// mean delivering the whole buffer again).
fn write_checkpoint(dir: &Path, pos: u64) -> io::Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{CHECKPOINT_MAGIC} {pos}\n").as_bytes())?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, dir.join(CHECKPOINT))
}

/// Creates and locks (exclusive `flock`, not waiting) the folder's lock file. Refused when
/// another process, or another output of this one, holds it: two writers would interleave
/// entries and delete each other's segments.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is in use by another syslog-sink process (its lock file {} is locked); \
                 one process per buffer folder",
                dir.display(),
                path.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

/// The folder's id from its `instance` file; a new one (written atomically) when the file is
/// missing or unreadable.
fn instance_id(dir: &Path) -> io::Result<String> {
    match fs::read_to_string(dir.join(INSTANCE)) {
        Ok(t) => {
            let id = t.trim();
            if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(id.to_ascii_lowercase());
            }
            tracing::warn!(dir = %dir.display(), content = %t.escape_debug(),
                "disk buffer: instance file unreadable; the folder gets a new id (records delivered again may be stored twice by a deduplicating destination)");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = crate::output::random_id(dir.as_os_str().as_encoded_bytes());
    let tmp = dir.join(INSTANCE_TMP);
    fs::write(&tmp, format!("{id}\n"))?;
    fs::rename(&tmp, dir.join(INSTANCE))?;
    Ok(id)
}

/// Segment files of `dir`, by start position.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(start) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            segs.push((start, e.path()));
        }
    }
    segs.sort();
    Ok(segs)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DiskBuffer {
    /// Opens (creates) the buffer of output `index` in `cfg.path`: reads the checkpoint,
    /// deletes confirmed segments, checks the others (reporting damage, see the [module
    /// documentation](self)) and starts a new segment to write. `frames`: the output forwards
    /// frames ([`crate::config::OutputType::buffers_frames`]).
    pub fn open(
        cfg: &BufferConfig,
        frames: bool,
        index: usize,
        metrics: Arc<Metrics>,
    ) -> io::Result<DiskBuffer> {
        let dir = cfg.path.clone().unwrap_or_default();
        let name = metrics
            .outputs
            .get(index)
            .map_or_else(String::new, |m| m.name.clone());
        let ctx = |what: &str, p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        fs::create_dir_all(&dir).map_err(|e| ctx("cannot create", &dir, e))?;
        let lock_file = lock_dir(&dir)?;
        let checkpoint = read_checkpoint(&dir)
            .map_err(|e| ctx("cannot read", &dir.join(CHECKPOINT), e))?
            .unwrap_or(0);
        let instance = instance_id(&dir).map_err(|e| ctx("cannot use", &dir.join(INSTANCE), e))?;
        let bit = 1u64 << index;
        let mut segments = BTreeMap::new();
        let (mut disk_bytes, mut records, mut first_appended, mut top) = (0, 0, None, checkpoint);
        let m = metrics.outputs.get(index);
        for (start, path) in list_segments(&dir).map_err(|e| ctx("cannot list", &dir, e))? {
            let len = fs::metadata(&path)
                .map_err(|e| ctx("cannot read", &path, e))?
                .len();
            if start + len <= checkpoint {
                remove_files(&name, vec![path]);
                continue;
            }
            let from = checkpoint.saturating_sub(start).min(len);
            let s = scan_file(&path, from, len, frames, bit, |_, _| {})
                .map_err(|e| ctx("cannot read", &path, e))?;
            if let Some(d) = &s.damage {
                tracing::warn!(output = %name, file = %d.file.display(), offset = d.offset,
                    reason = %d.reason, skipped_bytes = len - d.offset,
                    "disk buffer: damaged entry; the rest of this segment file is skipped (the records before it are delivered)");
                if let Some(m) = m {
                    m.buffer_corrupt.fetch_add(1, Relaxed);
                }
            }
            records += s.records;
            if first_appended.is_none() {
                first_appended = s.first_appended;
            }
            disk_bytes += len;
            top = top.max(start + len);
            segments.insert(
                start,
                Seg {
                    end: start + s.valid_end,
                    file_len: len,
                },
            );
        }
        // A new segment to write (an empty last one is reused).
        let live = top;
        let path = segment_path(&dir, live);
        let live_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ctx("cannot create", &path, e))?;
        segments.insert(
            live,
            Seg {
                end: live,
                file_len: 0,
            },
        );
        sync_dir(&dir).map_err(|e| ctx("cannot sync", &dir, e))?;
        let _ = fs::remove_file(dir.join(CHECKPOINT_TMP));
        if records > 0 {
            tracing::info!(output = %name, dir = %dir.display(), records, bytes = disk_bytes,
                "disk buffer: delivering the records left from the last run");
        }
        if let Some(m) = m {
            m.buffer_oldest_unix_ms
                .store(first_appended.unwrap_or(0), Relaxed);
        }
        let segment_bytes = (cfg.max_bytes / 8).clamp(MIN_SEGMENT, MAX_SEGMENT);
        let shared = Arc::new(Shared {
            dir,
            name,
            max_bytes: cfg.max_bytes,
            segment_bytes,
            fsync_every: (cfg.fsync_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.fsync_interval_ms)),
            frames,
            instance,
            window_cap: 1,
            state: Mutex::new(State {
                segments,
                live,
                live_file: live_file.try_clone().ok().map(Arc::new),
                write_pos: live,
                synced_pos: live,
                to_sync: Vec::new(),
                checkpoint,
                disk_bytes,
                records,
                writer_waiting: false,
                writer_done: false,
                reader_gone: false,
                window: VecDeque::new(),
                overflow: false,
                read_pos: checkpoint,
                last_take: Instant::now(),
            }),
            room: Condvar::new(),
            data: Notify::new(),
            metrics,
            index,
        });
        shared.gauges(&lock(&shared.state));
        Ok(DiskBuffer {
            shared,
            live: live_file,
            cursor: checkpoint,
            lock: lock_file,
        })
    }
}

/// Runs output `out` (number `index`) behind its disk buffer until its queue closes and every
/// record is confirmed: starts the writer thread and the sync task, and drives the output in
/// the returned task (see the [module documentation](self)).
pub fn run<O: Output>(
    buffer: DiskBuffer,
    out: O,
    index: usize,
    rx: Receiver,
    flush_every: Duration,
    window: usize,
) -> io::Result<JoinHandle<()>> {
    let DiskBuffer {
        mut shared,
        live,
        cursor,
        lock,
    } = buffer;
    let window = window.max(1);
    if let Some(s) = Arc::get_mut(&mut shared) {
        s.window_cap = window;
    }
    let w = shared.clone();
    std::thread::Builder::new()
        .name(format!("buffer-{index}"))
        .spawn(move || writer(w, rx, live))?;
    if let Some(every) = shared.fsync_every {
        tokio::spawn(sync_loop(shared.clone(), every));
    }
    tokio::spawn(window_janitor(shared.clone()));
    let reader = Reader {
        shared,
        held: None,
        disk: VecDeque::new(),
        seg_reader: Some(SegReader::default()),
        cursor,
        skip: None,
        pending: VecDeque::new(),
        taken: 0,
        flushed: 0,
        popped: 0,
        confirmed_pos: cursor,
        last_checkpoint: Instant::now(),
        _lock: lock,
    };
    Ok(tokio::spawn(reader.drive(out, flush_every)))
}

/// The writer thread: router queue → log (+ the in-memory window).
fn writer(shared: Arc<Shared>, mut rx: Receiver, mut file: File) {
    let bit = 1u64 << shared.index;
    let (mut head, mut parts) = (Vec::new(), Vec::new());
    let mut last_log: Option<Instant> = None;
    let mut full = FullLog::default();
    while let Some(batch) = rx.blocking_recv() {
        parts.clear();
        let appended = unix_ms();
        let records = encode_parts(&mut head, &mut parts, &batch, bit, shared.frames, appended);
        if records == 0 {
            continue;
        }
        let len = (head.len() + parts.iter().map(Bytes::len).sum::<usize>()) as u64;
        parts.insert(0, Bytes::copy_from_slice(&head));
        if !make_room(&shared, &mut file, len, &mut full) {
            return;
        }
        // Append; on failure (disk full ...) cut the partial entry and retry with backoff.
        let (start, offset) = {
            let st = lock(&shared.state);
            (st.write_pos, st.write_pos - st.live)
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let mut chunks = parts.clone();
            match write_chunks(&mut file, &mut chunks) {
                Ok(()) => break,
                Err(e) => {
                    if let Some(m) = shared.m() {
                        m.errors.fetch_add(1, Relaxed);
                    }
                    if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        tracing::error!(output = %shared.name, dir = %shared.dir.display(), error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "disk buffer: write failed; holding the output's queue and retrying");
                        last_log = Some(Instant::now());
                    }
                    let _ = file.set_len(offset);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if lock(&shared.state).reader_gone {
                        return;
                    }
                }
            }
        }
        if shared.fsync_every.is_none() {
            if let Err(e) = file.sync_data() {
                tracing::warn!(output = %shared.name, error = %e, "disk buffer: fdatasync failed");
            }
        }
        let end = start + len;
        // Counted before the batch is offered: the reader may take it from the window and
        // confirm it at once, and a confirmation counted before its records would be lost to
        // the saturating subtraction (the gauge then stays above 0 for good).
        lock(&shared.state).records += records;
        // The window first: the reader never reads from disk what it will get from memory.
        let dropped = offer(
            &shared,
            Item {
                batch,
                start,
                end,
                records,
                appended,
            },
        );
        drop(dropped);
        {
            let mut st = lock(&shared.state);
            st.write_pos = end;
            if shared.fsync_every.is_none() {
                st.synced_pos = end;
            }
            let live = st.live;
            if let Some(g) = st.segments.get_mut(&live) {
                g.end = end;
                g.file_len += len;
            }
            st.disk_bytes += len;
            shared.gauges(&st);
            if let Some(m) = shared.m() {
                let _ = m
                    .buffer_oldest_unix_ms
                    .compare_exchange(0, appended, Relaxed, Relaxed);
            }
        }
        shared.data.notify_one();
    }
    let closed = std::mem::take(&mut lock(&shared.state).to_sync);
    if let Err(e) = sync_files(&shared.dir, &closed, Some(&file)) {
        tracing::warn!(output = %shared.name, error = %e, "disk buffer: fdatasync failed");
    }
    let mut st = lock(&shared.state);
    st.synced_pos = st.write_pos;
    st.writer_done = true;
    if st.records > 0 {
        tracing::info!(output = %shared.name, records = st.records, bytes = st.disk_bytes,
            "disk buffer: queue closed, every record is on disk (synced); what is not delivered before the process exits is delivered after the next start");
    }
    drop(st);
    shared.data.notify_one();
}

/// Puts the batch just appended into the in-memory window: waits up to [`WINDOW_WAIT`] for
/// room; past that (the output stalls) the window is emptied and batches go to the log only
/// until the reader has caught up with it. Returns what to drop (outside the lock).
fn offer(shared: &Shared, item: Item) -> Vec<Item> {
    let mut st = lock(&shared.state);
    if st.overflow && st.window.is_empty() && st.read_pos >= item.start {
        st.overflow = false;
    }
    let deadline = Instant::now() + WINDOW_WAIT;
    while !st.overflow && !st.reader_gone && st.window.len() >= shared.window_cap {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            st.overflow = true;
            break;
        }
        st = shared
            .room
            .wait_timeout(st, left)
            .map_or_else(|p| p.into_inner().0, |(g, _)| g);
    }
    if st.overflow || st.reader_gone {
        let mut dropped: Vec<Item> = st.window.drain(..).collect();
        dropped.push(item);
        return dropped;
    }
    st.window.push_back(item);
    Vec::new()
}

/// Empties the window when the reader took nothing from it for [`WINDOW_WAIT`] (the output
/// stalls): its batches are in the log, and in memory they would hold the connections' share of
/// the in-flight budget, so that the listeners would stop reading although the log has room.
async fn window_janitor(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(WINDOW_WAIT).await;
        let dropped: Vec<Item> = {
            let mut st = lock(&shared.state);
            if st.reader_gone || st.writer_done {
                return;
            }
            if st.window.is_empty() || st.last_take.elapsed() < WINDOW_WAIT {
                continue;
            }
            st.overflow = true;
            st.window.drain(..).collect()
        };
        drop(dropped);
    }
}

/// "Buffer full" log state: at most one such line per [`LOG_EVERY`], each followed by one
/// "room again".
#[derive(Debug, Default)]
struct FullLog {
    logged: bool,
    last: Option<Instant>,
}

/// Waits until an entry of `len` bytes fits (the log always takes one entry when empty),
/// starting a new segment when the live one would grow past the segment size, or when it
/// alone fills the log (so that it can be deleted once confirmed). False when the reader is
/// gone.
fn make_room(shared: &Shared, file: &mut File, len: u64, full: &mut FullLog) -> bool {
    let mut roll_failed = false;
    loop {
        let mut st = lock(&shared.state);
        if st.reader_gone {
            return false;
        }
        let live_len = st.write_pos - st.live;
        let at = st.write_pos;
        if st.disk_bytes == 0 || st.disk_bytes + len <= shared.max_bytes {
            st.writer_waiting = false;
            drop(st);
            if full.logged {
                tracing::info!(output = %shared.name, "disk buffer has room again");
                full.logged = false;
            }
            if live_len > 0 && live_len + len > shared.segment_bytes {
                roll(shared, file, at);
            }
            return true;
        }
        // Room comes from deleting confirmed segments; the live one is never deleted, so
        // when it alone leaves no room, start a new one.
        if live_len > 0 && live_len + len > shared.max_bytes && !roll_failed {
            drop(st);
            roll_failed = !roll(shared, file, at);
            continue;
        }
        if !full.logged && full.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(output = %shared.name, max_bytes = shared.max_bytes,
                "disk buffer full; holding the output's queue (the listeners slow down) until records are confirmed");
            full.logged = true;
            full.last = Some(Instant::now());
        }
        st.writer_waiting = true;
        let paths = shared.collect(&mut st);
        if !paths.is_empty() {
            drop(st);
            remove_files(&shared.name, paths);
            continue;
        }
        drop(
            shared
                .room
                .wait_timeout(st, Duration::from_millis(100))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g),
        );
    }
}

/// Starts a new segment at `start`; logs and counts a failure (writing goes on in the
/// current one).
fn roll(shared: &Shared, file: &mut File, start: u64) -> bool {
    match new_segment(shared, file, start) {
        Ok(()) => true,
        Err(e) => {
            if let Some(m) = shared.m() {
                m.errors.fetch_add(1, Relaxed);
            }
            tracing::warn!(output = %shared.name, error = %e,
                "disk buffer: cannot start a new segment file; writing on in the current one");
            false
        }
    }
}

/// Closes the live segment and starts a new one at `start`. With a sync interval the sync
/// task syncs the closed segment and the folder at its next tick (the writer does not wait for
/// the disk); with `fsync_interval_ms = 0` every entry is already synced and the folder is
/// synced here.
fn new_segment(shared: &Shared, file: &mut File, start: u64) -> io::Result<()> {
    let path = shared.segment_path(start);
    let f = OpenOptions::new().create(true).append(true).open(&path)?;
    if shared.fsync_every.is_none() {
        sync_dir(&shared.dir)?;
    }
    let old = std::mem::replace(file, f);
    let shared_file = file.try_clone().ok().map(Arc::new);
    let mut st = lock(&shared.state);
    if shared.fsync_every.is_some() {
        st.to_sync.push(Arc::new(old));
    }
    st.live = start;
    st.live_file = shared_file;
    st.segments.insert(
        start,
        Seg {
            end: start,
            file_len: 0,
        },
    );
    Ok(())
}

/// Syncs closed segments and the folder, then the live segment up to `pos`.
fn sync_files(dir: &Path, closed: &[Arc<File>], live: Option<&File>) -> io::Result<()> {
    for f in closed {
        f.sync_data()?;
    }
    if !closed.is_empty() {
        sync_dir(dir)?;
    }
    match live {
        Some(f) => f.sync_data(),
        None => Ok(()),
    }
}

/// `fdatasync`s what was written every `every`: segments closed since the last tick (and the
/// folder), and the live segment.
async fn sync_loop(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (closed, file, pos) = {
            let mut st = lock(&shared.state);
            let idle = st.synced_pos >= st.write_pos && st.to_sync.is_empty();
            if st.reader_gone || (st.writer_done && idle) {
                return;
            }
            if idle {
                continue;
            }
            (
                std::mem::take(&mut st.to_sync),
                st.live_file.clone(),
                st.write_pos,
            )
        };
        let dir = shared.dir.clone();
        let r =
            tokio::task::spawn_blocking(move || sync_files(&dir, &closed, file.as_deref())).await;
        match r {
            Ok(Ok(())) => {
                let mut st = lock(&shared.state);
                st.synced_pos = st.synced_pos.max(pos);
            }
            Ok(Err(e)) => {
                if let Some(m) = shared.m() {
                    m.errors.fetch_add(1, Relaxed);
                }
                tracing::warn!(output = %shared.name, error = %e, "disk buffer: fdatasync failed");
            }
            Err(e) => {
                tracing::warn!(output = %shared.name, error = %e, "disk buffer: sync task failed")
            }
        }
    }
}

/// Reads entries back from segment files (keeps the last one open).
#[derive(Debug, Default)]
struct SegReader {
    open: Option<(u64, File)>,
}

/// What to read: entries of segment `seg` from `from` up to `to`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    seg: u64,
    from: u64,
    to: u64,
    /// Where to go on after damage: the next segment (or `to`).
    next: u64,
}

impl SegReader {
    /// Reads about [`READ_CHUNK`] bytes of entries; stops at damage.
    fn read(
        &mut self,
        dir: &Path,
        plan: Plan,
        frames: bool,
        bit: u64,
    ) -> (Vec<Item>, Option<Damage>) {
        let path = segment_path(dir, plan.seg);
        let damage = |offset: u64, reason: String| Damage {
            file: path.clone(),
            offset,
            reason,
        };
        if self.open.as_ref().is_none_or(|(s, _)| *s != plan.seg) {
            match File::open(&path) {
                Ok(f) => self.open = Some((plan.seg, f)),
                Err(e) => {
                    self.open = None;
                    return (
                        Vec::new(),
                        Some(damage(plan.from - plan.seg, format!("cannot open: {e}"))),
                    );
                }
            }
        }
        let Some((_, f)) = self.open.as_mut() else {
            return (Vec::new(), None);
        };
        if let Err(e) = f.seek(SeekFrom::Start(plan.from - plan.seg)) {
            return (
                Vec::new(),
                Some(damage(plan.from - plan.seg, format!("seek failed: {e}"))),
            );
        }
        let mut r = BufReader::with_capacity(256 << 10, &*f);
        let mut items = Vec::new();
        let mut pos = plan.from;
        while pos < plan.to && pos - plan.from < READ_CHUNK {
            let got = read_entry(&mut r, plan.to - pos)
                .and_then(|(payload, total)| decode(payload, frames, bit).map(|d| (d, total)));
            match got {
                Ok(((batch, appended), total)) => {
                    items.push(Item {
                        records: batch.lines.len() as u64,
                        batch: Arc::new(batch),
                        start: pos,
                        end: pos + total,
                        appended,
                    });
                    pos += total;
                }
                Err(reason) => return (items, Some(damage(pos - plan.seg, reason))),
            }
        }
        (items, None)
    }
}

/// The output's side: delivers from memory or from the log, confirms, checkpoints.
struct Reader {
    shared: Arc<Shared>,
    /// The folder's lock ([`DiskBuffer`]), released when the reader ends.
    _lock: File,
    /// A window item ahead of the cursor (the log is read up to it first).
    held: Option<Item>,
    /// Items read from the log, not yet given to the output.
    disk: VecDeque<Item>,
    seg_reader: Option<SegReader>,
    /// Everything before this position was given to the output (or skipped as damaged).
    cursor: u64,
    /// After damage at the first position, go on at the second.
    skip: Option<(u64, u64)>,
    /// Per item given to the output and not yet confirmed: its end position, the records
    /// taken up to and including it, when it was appended.
    pending: VecDeque<(u64, u64, u64)>,
    /// Records given to the output.
    taken: u64,
    /// `taken` at the last successful flush.
    flushed: u64,
    /// Records of the items confirmed so far.
    popped: u64,
    /// Everything before this position is confirmed.
    confirmed_pos: u64,
    last_checkpoint: Instant,
}

/// Marks the reader gone when the output task ends (also by a panic or an abort), so the
/// writer thread does not wait forever.
struct Gone(Arc<Shared>);

impl Drop for Gone {
    fn drop(&mut self) {
        lock(&self.0.state).reader_gone = true;
        self.0.room.notify_all();
    }
}

impl Reader {
    fn bit(&self) -> u64 {
        1u64 << self.shared.index
    }

    /// The next item to give the output, without waiting for the writer; reads the log when
    /// the window does not have it.
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(it) = self.disk.pop_front() {
                return Some(it);
            }
            loop {
                if self.held.is_none() {
                    let mut st = lock(&self.shared.state);
                    self.held = st.window.pop_front();
                    st.last_take = Instant::now();
                    drop(st);
                    if self.held.is_some() {
                        self.shared.room.notify_all();
                    }
                }
                match &self.held {
                    Some(h) if h.start < self.cursor => self.held = None,
                    Some(h) if h.start == self.cursor => return self.held.take(),
                    _ => break,
                }
            }
            if let Some((at, to)) = self.skip {
                if self.cursor >= at {
                    self.cursor = self.cursor.max(to);
                    self.skip = None;
                    continue;
                }
            }
            let plan = {
                let mut st = lock(&self.shared.state);
                if self.cursor >= st.write_pos {
                    st.read_pos = st.read_pos.max(self.cursor);
                    return None;
                }
                let limit = self.held.as_ref().map_or(st.write_pos, |h| h.start);
                let Some((&seg, g)) = st.segments.range(..=self.cursor).next_back() else {
                    // Before the first segment (deleted or never written): go to it.
                    match st.segments.keys().next() {
                        Some(&first) if first > self.cursor => {
                            self.cursor = first;
                            continue;
                        }
                        _ => return None,
                    }
                };
                let end = if seg == st.live { st.write_pos } else { g.end };
                let next = st.segments.range(self.cursor + 1..).next().map(|(&s, _)| s);
                if self.cursor >= end {
                    // The end of a segment (the rest of it damaged): on to the next.
                    match next {
                        Some(n) => {
                            self.cursor = n;
                            continue;
                        }
                        None => return None,
                    }
                }
                Plan {
                    seg,
                    from: self.cursor,
                    to: end.min(limit),
                    next: next.unwrap_or(end).max(end.min(limit)),
                }
            };
            if plan.from >= plan.to {
                return None;
            }
            let mut sr = self.seg_reader.take().unwrap_or_default();
            let dir = self.shared.dir.clone();
            let (frames, bit) = (self.shared.frames, self.bit());
            let joined = tokio::task::spawn_blocking(move || {
                let r = sr.read(&dir, plan, frames, bit);
                (sr, r)
            })
            .await;
            let (items, damage) = match joined {
                Ok((sr, r)) => {
                    self.seg_reader = Some(sr);
                    r
                }
                Err(e) => {
                    tracing::error!(output = %self.shared.name, error = %e, "disk buffer: read task failed");
                    return None;
                }
            };
            if let Some(d) = damage {
                let at = plan.seg + d.offset;
                tracing::warn!(output = %self.shared.name, file = %d.file.display(), offset = d.offset,
                    reason = %d.reason,
                    "disk buffer: damaged entry; the rest of this segment file is skipped (the records before it are delivered)");
                if let Some(m) = self.shared.m() {
                    m.buffer_corrupt.fetch_add(1, Relaxed);
                }
                let mut st = lock(&self.shared.state);
                if let Some(g) = st.segments.get_mut(&plan.seg) {
                    g.end = g.end.min(at);
                }
                drop(st);
                self.skip = Some((at, plan.next));
            }
            self.disk.extend(items);
        }
    }

    /// Whether more is there to give the output right now.
    fn more(&mut self) -> bool {
        if !self.disk.is_empty() || self.held.is_some() {
            return true;
        }
        let st = lock(&self.shared.state);
        !st.window.is_empty() || self.cursor < st.write_pos
    }

    async fn flush<O: Output>(&mut self, out: &mut O) {
        if let Err(e) = out.flush().await {
            if let Some(m) = self.shared.m() {
                retry_flush(out, m, e).await;
            }
        }
        self.flushed = self.taken;
    }

    /// Takes the output's confirmations; writes the checkpoint (now with `force`, else at most
    /// every [`CHECKPOINT_EVERY`] or when the writer waits for room) and deletes what it covers.
    async fn advance(&mut self, confirmed: Option<u64>, force: bool) {
        let conf = confirmed.unwrap_or(self.flushed);
        let before = self.popped;
        while let Some(&(end, cum, _)) = self.pending.front() {
            if cum > conf {
                break;
            }
            self.confirmed_pos = end;
            self.popped = cum;
            self.pending.pop_front();
        }
        if self.pending.is_empty() {
            // Damaged parts skipped after the last item count as done.
            self.confirmed_pos = self.confirmed_pos.max(self.cursor);
        }
        let (checkpoint, waiting, records_left) = {
            let mut st = lock(&self.shared.state);
            st.records = st.records.saturating_sub(self.popped - before);
            self.shared.gauges(&st);
            (st.checkpoint, st.writer_waiting, st.records)
        };
        if let Some(m) = self.shared.m() {
            let oldest = match self.pending.front() {
                Some(&(_, _, t)) => t,
                None if records_left == 0 => 0,
                None => m.buffer_oldest_unix_ms.load(Relaxed),
            };
            m.buffer_oldest_unix_ms.store(oldest, Relaxed);
        }
        if self.confirmed_pos <= checkpoint
            || !(force || waiting || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY)
        {
            return;
        }
        let pos = self.confirmed_pos;
        let dir = self.shared.dir.clone();
        let r = tokio::task::spawn_blocking(move || write_checkpoint(&dir, pos)).await;
        self.last_checkpoint = Instant::now();
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if let Some(m) = self.shared.m() {
                    m.errors.fetch_add(1, Relaxed);
                }
                tracing::warn!(output = %self.shared.name, dir = %self.shared.dir.display(), error = %e,
                    "disk buffer: cannot write the checkpoint; confirmed records stay in the buffer");
                return;
            }
            Err(e) => {
                tracing::warn!(output = %self.shared.name, error = %e, "disk buffer: checkpoint task failed");
                return;
            }
        }
        let paths = {
            let mut st = lock(&self.shared.state);
            st.checkpoint = pos;
            self.shared.collect(&mut st)
        };
        if !paths.is_empty() {
            let name = self.shared.name.clone();
            let _ = tokio::task::spawn_blocking(move || remove_files(&name, paths)).await;
        }
        self.shared.room.notify_all();
    }

    async fn drive<O: Output>(mut self, mut out: O, flush_every: Duration) {
        let _gone = Gone(self.shared.clone());
        let bit = self.bit();
        let metrics = self.shared.metrics.clone();
        let Some(m) = metrics.outputs.get(self.shared.index) else {
            return;
        };
        let mut tick = tokio::time::interval(flush_every.min(CHECKPOINT_EVERY));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = Probe::new();
        let mut dirty = false;
        loop {
            if let Some(it) = self.next_item().await {
                let entry = EntryId {
                    buffer: &self.shared.instance,
                    position: it.start,
                    appended: it.appended,
                };
                out.write_entry(&it.batch, bit, m, entry).await;
                self.taken += it.records;
                self.pending.push_back((it.end, self.taken, it.appended));
                self.cursor = self.cursor.max(it.end);
                lock(&self.shared.state).read_pos = self.cursor;
                dirty = true;
                if !self.more() {
                    self.flush(&mut out).await;
                    probe.reached(m);
                    dirty = false;
                }
                self.advance(out.confirmed(), false).await;
                continue;
            }
            let done = {
                let st = lock(&self.shared.state);
                st.writer_done && self.cursor >= st.write_pos
            };
            if done && !self.more() {
                break;
            }
            tokio::select! {
                _ = self.shared.data.notified() => {}
                _ = tick.tick() => {
                    if dirty || out.unconfirmed() {
                        self.flush(&mut out).await;
                        probe.reached(m);
                        dirty = false;
                    }
                    self.advance(out.confirmed(), false).await;
                }
                _ = probe.due(), if probe.active() && !dirty => probe.attempt(&mut out, m).await,
            }
        }
        self.flush(&mut out).await;
        if let Err(e) = out.close().await {
            m.errors.fetch_add(1, Relaxed);
            tracing::error!(output = %m.name, error = %e, "closing output failed");
        }
        self.advance(out.confirmed(), true).await;
        tracing::debug!(output = %m.name, "output stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn json_batch(lines: &[(&str, u64)]) -> Batch {
        let mut json = Vec::new();
        let mut b = Batch::default();
        for (t, mask) in lines {
            json.extend_from_slice(t.as_bytes());
            b.lines.push(Line {
                end: json.len() as u32,
                mask: *mask,
            });
            b.any |= mask;
        }
        b.json = Bytes::from(json);
        b
    }

    /// A folder in use is refused with a message naming it and its lock file; free again once
    /// the first buffer is gone. A second process is shut out the same way (`flock` locks
    /// conflict across open files, in one process or several).
    #[test]
    fn a_folder_in_use_is_refused_until_its_buffer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            path: Some(dir.path().to_path_buf()),
            ..BufferConfig::default()
        };
        let metrics = Arc::new(Metrics::new(&[], &["o".to_string()]));
        let first = DiskBuffer::open(&cfg, false, 0, metrics.clone()).unwrap();
        let e = DiskBuffer::open(&cfg, false, 0, metrics.clone()).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{text}");
        assert!(
            text.contains(&dir.path().display().to_string())
                && text.contains("in use by another syslog-sink process")
                && text.contains("lock"),
            "{text}"
        );
        drop(first);
        DiskBuffer::open(&cfg, false, 0, metrics).expect("free once the first is dropped");
    }

    /// The checkpoint is written whole (temporary file, synced, renamed) and read back.
    #[test]
    fn checkpoint_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), None);
        write_checkpoint(dir.path(), 42).unwrap();
        write_checkpoint(dir.path(), 1234).unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), Some(1234));
        assert!(!dir.path().join(CHECKPOINT_TMP).exists());
    }

    #[test]
    fn json_entries_round_trip_only_the_wanted_lines() {
        let b = json_batch(&[("a\n", 0b01), ("bb\n", 0b10), ("ccc\n", 0b11)]);
        let mut buf = Vec::new();
        assert_eq!(encode(&mut buf, &b, 0b01, false, 7), 2);
        assert_eq!(encode(&mut buf, &b, 0b100, false, 7), 0);
        let (payload, total) = read_entry(&mut &buf[..], buf.len() as u64).unwrap();
        assert_eq!(total, buf.len() as u64);
        let (d, appended) = decode(payload, false, 0b01).unwrap();
        assert_eq!(appended, 7);
        assert_eq!(&d.json[..], b"a\nccc\n");
        let runs: Vec<_> = d.runs(0b01).collect();
        assert_eq!(runs, vec![(Bytes::from("a\nccc\n"), 2)]);
        // A flipped bit is caught by the checksum; a short read is torn.
        let mut bad = buf.clone();
        bad[HEADER + 3] ^= 1;
        assert!(read_entry(&mut &bad[..], bad.len() as u64)
            .unwrap_err()
            .contains("checksum"));
        assert!(read_entry(&mut &buf[..], buf.len() as u64 - 1)
            .unwrap_err()
            .contains("torn"));
        // The other content type is refused.
        let (payload, _) = read_entry(&mut &buf[..], buf.len() as u64).unwrap();
        assert!(decode(payload, true, 1).is_err());
    }

    #[test]
    fn frame_entries_keep_kind_and_bytes() {
        let kinds = [
            FrameKind::Complete,
            FrameKind::Truncated {
                reason: FrameErrorKind::FrameTooLong,
                declared_length: Some(99_999),
            },
            FrameKind::Truncated {
                reason: FrameErrorKind::EofWithoutTrailer,
                declared_length: None,
            },
            FrameKind::Error(FrameErrorKind::MsgLenZero),
        ];
        let mut b = Batch::default();
        for (i, k) in kinds.iter().enumerate() {
            b.lines.push(Line { end: 0, mask: 1 });
            b.frames.push(Frame {
                offset: 5,
                data: Bytes::from(format!("frame {i}")),
                kind: *k,
                wire_len: 9,
                dropped_before: 0,
            });
        }
        let mut buf = Vec::new();
        assert_eq!(encode(&mut buf, &b, 1, true, 1), 4);
        let (payload, _) = read_entry(&mut &buf[..], buf.len() as u64).unwrap();
        let (d, _) = decode(payload, true, 1).unwrap();
        assert_eq!(d.frames.len(), 4);
        for (i, f) in d.frames.iter().enumerate() {
            assert_eq!(f.kind, kinds[i]);
            assert_eq!(f.data, format!("frame {i}"));
        }
        assert_eq!(d.count(1), 4);
    }

    #[test]
    fn startup_skips_a_torn_tail_and_keeps_what_is_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for i in 0..5 {
            let line = format!("line {i}\n");
            encode(&mut buf, &json_batch(&[(&line, 1)]), 1, false, 1);
            ends.push(buf.len());
        }
        let seg = segment_path(dir.path(), 0);
        // The last entry is torn: 3 bytes short.
        fs::write(&seg, &buf[..buf.len() - 3]).unwrap();
        let s = scan(dir.path(), false, 1).unwrap();
        assert_eq!(s.damage.len(), 1);
        assert_eq!(s.damage[0].offset, ends[3] as u64);
        assert_eq!(s.segments[0].1.len(), 4);
        let metrics = Arc::new(Metrics::new(&[], &["o".to_string()]));
        let cfg = BufferConfig {
            path: Some(dir.path().to_path_buf()),
            ..BufferConfig::default()
        };
        let b = DiskBuffer::open(&cfg, false, 0, metrics.clone()).unwrap();
        let m = &metrics.outputs[0];
        assert_eq!(m.buffer_corrupt.load(Relaxed), 1);
        assert_eq!(m.buffer_records.load(Relaxed), 4);
        let st = lock(&b.shared.state);
        assert_eq!(st.segments[&0].end, ends[3] as u64);
        // Writing goes on in a new segment after the old file.
        assert_eq!(st.live, buf.len() as u64 - 3);
    }

    /// Takes JSON lines; confirms on flush.
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Output for Collect {
        async fn write(&mut self, lines: Bytes) -> io::Result<()> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&lines);
            Ok(())
        }
        async fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Per record taken: the entry id it came with (owned) and its line.
    type Taken = Arc<Mutex<Vec<(String, u64, u64, Bytes)>>>;

    /// Notes the entry id of every record; confirms everything on flush, or nothing.
    struct Ids {
        got: Taken,
        confirm: bool,
    }

    impl Output for Ids {
        async fn write_entry(
            &mut self,
            batch: &Arc<Batch>,
            bit: u64,
            _m: &OutputMetrics,
            entry: EntryId<'_>,
        ) {
            let mut got = self.got.lock().unwrap_or_else(|p| p.into_inner());
            for (run, _) in batch.runs(bit) {
                for line in run.split_inclusive(|&b| b == b'\n') {
                    got.push((
                        entry.buffer.to_string(),
                        entry.position,
                        entry.appended,
                        Bytes::copy_from_slice(line),
                    ));
                }
            }
        }
        fn confirmed(&self) -> Option<u64> {
            (!self.confirm).then_some(0)
        }
        async fn write(&mut self, _lines: Bytes) -> io::Result<()> {
            Ok(())
        }
        async fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `Ids` behind the buffer in `dir` with `batches` sent, until its queue closed and
    /// the buffer is drained (or nothing confirmed); returns what it took.
    async fn run_ids(
        dir: &Path,
        batches: &[Batch],
        confirm: bool,
    ) -> Vec<(String, u64, u64, Bytes)> {
        let cfg = BufferConfig {
            path: Some(dir.to_path_buf()),
            max_bytes: 1 << 20,
            fsync_interval_ms: 10,
        };
        let metrics = Arc::new(Metrics::new(&[], &["o".to_string()]));
        let b = DiskBuffer::open(&cfg, false, 0, metrics).unwrap();
        let got = Taken::default();
        let out = Ids {
            got: got.clone(),
            confirm,
        };
        let (tx, rx) = mpsc::channel(4);
        let task = run(b, out, 0, rx, Duration::from_millis(20), 1).unwrap();
        for b in batches {
            tx.send(Arc::new(b.clone())).await.unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let v = got.lock().unwrap().clone();
        v
    }

    /// A record delivered again after a restart (from the log) comes with the entry id it had
    /// the first time (from memory): the folder's id, kept in its `instance` file, the entry's
    /// position and append time. Another folder has another id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entry_ids_are_the_same_when_delivered_again() {
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<Batch> = (0..20)
            .map(|i| {
                let a = format!("{{\"n\":{i},\"k\":0}}\n");
                let b = format!("{{\"n\":{i},\"k\":1}}\n");
                json_batch(&[(&a, 1), ("skip\n", 2), (&b, 1)])
            })
            .collect();
        // Nothing confirmed: every record is delivered again at the next start.
        let first = run_ids(dir.path(), &batches, false).await;
        assert_eq!(first.len(), 40);
        let again = run_ids(dir.path(), &[], true).await;
        assert_eq!(again, first);
        let id = fs::read_to_string(dir.path().join(INSTANCE)).unwrap();
        assert_eq!(id.trim(), first[0].0);
        assert_eq!(id.trim().len(), 16);
        // Distinct entries, distinct (position, appended); records of one entry share them.
        let mut entries: Vec<(u64, u64)> = first.iter().map(|t| (t.1, t.2)).collect();
        entries.dedup();
        assert_eq!(entries.len(), 20);
        // Everything confirmed now: nothing a third time; the id stays.
        assert!(run_ids(dir.path(), &[], true).await.is_empty());
        let more = run_ids(dir.path(), &batches[..1], true).await;
        assert_eq!(more[0].0, first[0].0);
        assert!(more[0].1 > first[39].1, "positions go on");
        let other = tempfile::tempdir().unwrap();
        let elsewhere = run_ids(other.path(), &batches[..1], true).await;
        assert_ne!(elsewhere[0].0, first[0].0);
    }

    /// Records pass through the buffer (memory and, with a one-batch window, the log), the
    /// checkpoint ends past them, and a reopened buffer has nothing to deliver again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_in_order_and_checkpoints_everything() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            path: Some(dir.path().to_path_buf()),
            max_bytes: 64 << 10,
            fsync_interval_ms: 10,
        };
        let metrics = Arc::new(Metrics::new(&[], &["o".to_string()]));
        let b = DiskBuffer::open(&cfg, false, 0, metrics.clone()).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(4);
        let task = run(b, Collect(got.clone()), 0, rx, Duration::from_millis(20), 1).unwrap();
        let mut expect = Vec::new();
        for i in 0..2000 {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 97));
            expect.extend_from_slice(line.as_bytes());
            tx.send(Arc::new(json_batch(&[(&line, 1)]))).await.unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*got.lock().unwrap(), expect);
        let m = &metrics.outputs[0];
        assert_eq!(m.records.load(Relaxed), 2000);
        assert_eq!(m.buffer_records.load(Relaxed), 0);
        // Bounded: segments were deleted along the way.
        assert!(m.buffer_bytes.load(Relaxed) <= 64 << 10);
        let again = scan(dir.path(), false, 1).unwrap();
        let left: usize = again.segments.iter().map(|(_, e)| e.len()).sum();
        assert_eq!(left, 0, "checkpoint {}", again.checkpoint);
    }
}
