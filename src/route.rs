//! Route: fan-out of encoded batches to the outputs, each behind its own bounded queue.
//!
//! A connection encodes a whole read's worth of frames into one [`Batch`] (one buffer of JSON
//! lines plus, per line, a bit mask of the outputs whose filter it passed) and hands the same
//! `Arc<Batch>` to every output that wants any line of it. Sending waits while an output's queue
//! is full: the connection then stops reading its socket, and TCP pushes back on the sender.
//! Nothing is dropped.
//!
//! Memory in flight is bounded for the whole process, whatever the number of connections, by a
//! [`Budget`] (`[server] max_inflight_bytes`): a connection takes its share for the bytes of each
//! read before handing the frames on, and for the JSON made of them before routing the batch;
//! the share goes back when the last output is done with the batch. When the budget is spent,
//! connections stop reading (the same TCP backpressure as a full queue).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::classify::{Classifier, K8sKind};
use crate::config::{ConfigError, FilterConfig};
use crate::framing::Frame;
use crate::record::Facts;

/// The records of one read, encoded once for every output.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// JSON lines, each ending in `\n`.
    pub json: Bytes,
    /// Per line: where it ends in `json` and which outputs want it (bit i = output i).
    pub lines: Vec<Line>,
    /// Outputs that want every line (AND of the masks).
    pub all: u64,
    /// Outputs that want at least one line (OR of the masks).
    pub any: u64,
    /// The frames the lines were made from, in the same order.
    pub frames: Vec<Frame>,
    /// Its share of the in-flight [`Budget`], given back when the last output drops the batch.
    pub budget: Option<Arc<OwnedSemaphorePermit>>,
}

/// One line of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// End offset (exclusive) of the line in [`Batch::json`].
    pub end: u32,
    /// Outputs that want it.
    pub mask: u64,
}

impl Batch {
    /// The parts of `json` output `bit` wants, as few contiguous runs as possible, and how many
    /// lines they hold.
    pub fn runs(&self, bit: u64) -> impl Iterator<Item = (Bytes, u64)> + '_ {
        let mut start = 0u32;
        let mut i = 0;
        std::iter::from_fn(move || {
            // Skip lines the output does not want.
            while i < self.lines.len() && self.lines[i].mask & bit == 0 {
                start = self.lines[i].end;
                i += 1;
            }
            if i == self.lines.len() {
                return None;
            }
            let run_start = start;
            let mut n = 0;
            while i < self.lines.len() && self.lines[i].mask & bit != 0 {
                start = self.lines[i].end;
                i += 1;
                n += 1;
            }
            Some((self.json.slice(run_start as usize..start as usize), n))
        })
    }

    /// Number of lines output `bit` wants.
    pub fn count(&self, bit: u64) -> u64 {
        if self.all & bit != 0 {
            return self.lines.len() as u64;
        }
        self.lines.iter().filter(|l| l.mask & bit != 0).count() as u64
    }
}

/// An output's filter, compiled against the classifier's category table.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Allowed categories, as a bit set by category index; `None` = any record.
    categories: Option<Vec<bool>>,
    /// Allowed kinds: event, pod_log, other.
    kinds: Option<[bool; 3]>,
    /// APP-NAME prefixes.
    prefixes: Option<Vec<String>>,
    /// Severity at most.
    max_severity: Option<u8>,
}

impl Filter {
    /// Compiles a config filter.
    pub fn new(cfg: &FilterConfig, classifier: &Classifier) -> Result<Filter, ConfigError> {
        let categories = match &cfg.category {
            None => None,
            Some(names) => {
                let mut set = vec![false; classifier.categories().len()];
                for n in names {
                    let i = classifier
                        .categories()
                        .iter()
                        .position(|c| c == n)
                        .ok_or_else(|| ConfigError(format!("unknown category {n:?}")))?;
                    set[i] = true;
                }
                Some(set)
            }
        };
        let kinds = match &cfg.kind {
            None => None,
            Some(names) => {
                let mut set = [false; 3];
                for n in names {
                    match n.as_str() {
                        "event" => set[0] = true,
                        "pod_log" => set[1] = true,
                        "other" => set[2] = true,
                        _ => return Err(ConfigError(format!("unknown kind {n:?}"))),
                    }
                }
                Some(set)
            }
        };
        Ok(Filter {
            categories,
            kinds,
            prefixes: cfg.app_name_prefix.clone(),
            max_severity: cfg.max_severity,
        })
    }

    /// Whether a record with these facts passes.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        if let Some(set) = &self.categories {
            match f.category {
                Some(c) if set.get(c.0 as usize).copied().unwrap_or(false) => {}
                _ => return false,
            }
        }
        if let Some(set) = &self.kinds {
            let i = match f.kind {
                Some(K8sKind::Event) => 0,
                Some(K8sKind::PodLog) => 1,
                None => 2,
            };
            if !set[i] {
                return false;
            }
        }
        if let Some(prefixes) = &self.prefixes {
            match f.app_name {
                Some(a) if prefixes.iter().any(|p| a.starts_with(p.as_str())) => {}
                _ => return false,
            }
        }
        if let Some(max) = self.max_severity {
            match f.severity {
                Some(s) if s <= max => {}
                _ => return false,
            }
        }
        true
    }
}

/// A process-wide bound on the bytes held by reads and batches on their way to the outputs.
///
/// Counted in KiB (rounded up); one take is capped at the whole budget so that a single large
/// read can always go through once the others are done.
#[derive(Debug, Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    /// The whole budget in KiB.
    kib: u32,
}

/// A share of the [`Budget`].
pub type Share = OwnedSemaphorePermit;

impl Budget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: usize) -> Budget {
        let kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Budget {
            sem: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Takes a share for `bytes`, waiting until that much is free; `None` only if the budget
    /// was closed (never, in practice).
    pub async fn take(&self, bytes: usize) -> Option<Share> {
        let kib = bytes.div_ceil(1024).min(self.kib as usize) as u32;
        self.sem.clone().acquire_many_owned(kib).await.ok()
    }

    /// Takes a share for `bytes` if that much is free now.
    pub fn try_take(&self, bytes: usize) -> Option<Share> {
        let kib = bytes.div_ceil(1024).min(self.kib as usize) as u32;
        self.sem.clone().try_acquire_many_owned(kib).ok()
    }

    /// Bytes of the budget in use now.
    pub fn in_use(&self) -> usize {
        (self.kib as usize - self.sem.available_permits()) * 1024
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> usize {
        self.kib as usize * 1024
    }
}

/// The outputs (bit i = output i, `filters[i]`; `None` = every record) a record with these
/// facts goes to.
#[inline]
pub fn mask_with(filters: &[Option<Filter>], facts: &Facts<'_>) -> u64 {
    let mut mask = 0;
    for (i, f) in filters.iter().enumerate() {
        if f.as_ref().is_none_or(|f| f.matches(facts)) {
            mask |= 1 << i;
        }
    }
    mask
}

/// Reads the outputs' queue depths for the admin listener. It holds weak senders, so it does
/// not keep a queue open at shutdown.
#[derive(Debug, Clone, Default)]
pub struct QueueProbe {
    queues: Vec<mpsc::WeakSender<Arc<Batch>>>,
    budget: Option<Budget>,
}

impl QueueProbe {
    /// Per output: (batches waiting, capacity); `None` once the queue is closed.
    pub fn depths(&self) -> Vec<Option<(usize, usize)>> {
        self.queues
            .iter()
            .map(|w| {
                w.upgrade()
                    .map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
            })
            .collect()
    }

    /// The in-flight budget: (bytes in use, whole budget); `None` without one.
    pub fn inflight(&self) -> Option<(usize, usize)> {
        self.budget.as_ref().map(|b| (b.in_use(), b.total()))
    }
}

/// The queue into one output.
#[derive(Debug, Clone)]
struct Route {
    filter: Option<Filter>,
    tx: mpsc::Sender<Arc<Batch>>,
}

/// Hands batches to the outputs' queues. Cloned into every connection; when the last clone is
/// dropped, the outputs see their queue closed, flush and stop.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// The in-flight memory bound shared by every connection; none = unbounded (tests).
    budget: Option<Budget>,
}

/// The output side of a route: what an output task reads.
pub type Receiver = mpsc::Receiver<Arc<Batch>>;

/// An output is gone (its task ended): the batch could not be handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputClosed(pub usize);

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// A router whose connections share an in-flight budget of `bytes`.
    pub fn with_budget(bytes: usize) -> Router {
        Router {
            routes: Vec::new(),
            budget: Some(Budget::new(bytes)),
        }
    }

    /// The in-flight budget, if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// Adds an output with a queue of `capacity` batches; returns the receiving end.
    pub fn add(&mut self, filter: Option<Filter>, capacity: usize) -> Receiver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.routes.push(Route { filter, tx });
        rx
    }

    /// The outputs a record with these facts goes to, by the filters given to [`Router::add`].
    /// (The server routes with its live, reloadable filters instead: [`mask_with`].)
    pub fn mask(&self, facts: &Facts<'_>) -> u64 {
        let mut mask = 0;
        for (i, r) in self.routes.iter().enumerate() {
            if r.filter.as_ref().is_none_or(|f| f.matches(facts)) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// A handle that reads the queue depths without keeping the queues open (see
    /// [`QueueProbe`]).
    pub fn probe(&self) -> QueueProbe {
        QueueProbe {
            queues: self.routes.iter().map(|r| r.tx.downgrade()).collect(),
            budget: self.budget().cloned(),
        }
    }

    /// Hands `batch` to every output that wants a line of it, waiting while a queue is full.
    pub async fn send(&self, batch: Batch) -> Result<(), OutputClosed> {
        let batch = Arc::new(batch);
        for (i, r) in self.routes.iter().enumerate() {
            if batch.any & (1 << i) != 0 {
                r.tx.send(batch.clone())
                    .await
                    .map_err(|_| OutputClosed(i))?;
            }
        }
        Ok(())
    }

    /// Batches waiting in each output's queue.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.routes
            .iter()
            .map(|r| r.tx.max_capacity() - r.tx.capacity())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lines: &[(&str, u64)]) -> Batch {
        let mut json = Vec::new();
        let mut out = Vec::new();
        let (mut all, mut any) = (u64::MAX, 0);
        for (text, mask) in lines {
            json.extend_from_slice(text.as_bytes());
            out.push(Line {
                end: json.len() as u32,
                mask: *mask,
            });
            all &= mask;
            any |= mask;
        }
        Batch {
            json: Bytes::from(json),
            lines: out,
            all,
            any,
            frames: Vec::new(),
            budget: None,
        }
    }

    #[test]
    fn runs_select_contiguous_lines() {
        let b = batch(&[("a\n", 0b01), ("b\n", 0b11), ("c\n", 0b10), ("d\n", 0b01)]);
        let r1: Vec<_> = b.runs(0b01).collect();
        assert_eq!(
            r1,
            vec![(Bytes::from("a\nb\n"), 2), (Bytes::from("d\n"), 1)]
        );
        let r2: Vec<_> = b.runs(0b10).collect();
        assert_eq!(r2, vec![(Bytes::from("b\nc\n"), 2)]);
        assert_eq!(b.runs(0b100).count(), 0);
        assert_eq!(b.count(0b01), 3);
        assert_eq!(b.count(0b10), 2);
    }

    #[test]
    fn filters_check_every_key_given() {
        use crate::classify::Classifier;
        let classifier = Classifier::builtin();
        let back_off = classifier.category("back_off").unwrap();
        let started = classifier.category("started").unwrap();
        let cfg = FilterConfig {
            category: Some(vec!["back_off".into(), "err_image_pull".into()]),
            kind: None,
            app_name_prefix: Some(vec!["k8s.event".into()]),
            max_severity: Some(6),
        };
        let f = Filter::new(&cfg, &classifier).unwrap();
        let event = |category, severity, app_name| Facts {
            kind: Some(K8sKind::Event),
            category,
            severity,
            app_name,
        };
        assert!(f.matches(&event(Some(back_off), Some(6), Some("k8s.event/ns/x/"))));
        assert!(!f.matches(&event(Some(started), Some(6), Some("k8s.event/ns/x/"))));
        assert!(!f.matches(&event(Some(back_off), Some(7), Some("k8s.event/ns/x/"))));
        assert!(!f.matches(&event(Some(back_off), Some(6), Some("other"))));
        assert!(!f.matches(&event(None, None, None)));
        let kinds = Filter::new(
            &FilterConfig {
                kind: Some(vec!["pod_log".into(), "other".into()]),
                ..FilterConfig::default()
            },
            &classifier,
        )
        .unwrap();
        assert!(!kinds.matches(&event(Some(back_off), Some(6), None)));
        assert!(kinds.matches(&Facts {
            kind: None,
            category: None,
            severity: None,
            app_name: None
        }));
        let bad = FilterConfig {
            category: Some(vec!["nope".into()]),
            ..FilterConfig::default()
        };
        assert!(Filter::new(&bad, &classifier).is_err());
    }

    #[tokio::test]
    async fn budget_waits_until_shares_come_back_and_caps_one_take() {
        let budget = Budget::new(10 * 1024);
        let a = budget.try_take(6 * 1024).unwrap();
        assert_eq!(budget.in_use(), 6 * 1024);
        // 1 byte counts as a whole KiB; 5 KiB do not fit next to 6.
        assert!(budget.try_take(5 * 1024).is_none());
        let b = budget.try_take(1).unwrap();
        assert_eq!(budget.in_use(), 7 * 1024);
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(4 * 1024).await.map(|s| s.num_permits()) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.unwrap(), Some(4));
        drop(b);
        // More than the whole budget is capped at the whole budget: it can always go through.
        let all = budget.take(1 << 30).await.unwrap();
        assert_eq!(all.num_permits(), 10);
        assert_eq!(budget.in_use(), 10 * 1024);
    }

    #[tokio::test]
    async fn send_waits_when_queue_full_and_skips_unwanted() {
        let mut router = Router::new();
        let mut rx0 = router.add(None, 1);
        let mut rx1 = router.add(None, 1);
        router.send(batch(&[("a\n", 0b01)])).await.unwrap();
        // Output 1 wanted nothing: its queue is still empty.
        assert!(rx1.try_recv().is_err());
        // Output 0's queue (capacity 1) is full: the next send waits.
        let r = router.clone();
        let pending = tokio::spawn(async move { r.send(batch(&[("b\n", 0b01)])).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pending.is_finished());
        assert_eq!(&rx0.recv().await.unwrap().json[..], b"a\n");
        pending.await.unwrap().unwrap();
        assert_eq!(&rx0.recv().await.unwrap().json[..], b"b\n");
    }
}
