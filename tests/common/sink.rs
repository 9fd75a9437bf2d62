//! The real binary under faults: started with a config in a temporary folder, killed with
//! `kill -9` (or stopped with SIGTERM) and started again on the same folder; its outputs' disk
//! buffers read back after their checkpoint (what a restart will deliver); arrivals checked as
//! a multiset of `seq=` numbers. Used by the `kill -9` tests of tests/buffer.rs (syslog),
//! tests/http.rs and tests/nats.rs. Every wait is bounded.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary cargo built for the tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_syslog-sink");

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The real binary with a config in a temporary folder, each run's stderr in a file of its own
/// (`sink.<run>.log`).
pub struct Sink {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    runs: usize,
}

impl Sink {
    /// Writes `dir/sink.toml`: `[server]` (no summary lines, 10 s of shutdown grace, buffers
    /// under `dir/data`), one listener on a free loopback port, then `outputs` (the
    /// `[[output]]` sections).
    pub fn new(dir: &Path, outputs: &str) -> Sink {
        let port = free_port();
        let config = format!(
            "[server]\nsummary_interval_secs = 0\nshutdown_grace_secs = 10\ndata_dir = {:?}\n\
             [[listen]]\naddress = \"127.0.0.1:{port}\"\n{outputs}\n",
            dir.join("data").display().to_string(),
        );
        std::fs::write(dir.join("sink.toml"), config).expect("config");
        Sink {
            dir: dir.to_path_buf(),
            port,
            child: None,
            runs: 0,
        }
    }

    /// The buffer folder of output `name` (the default, under `data_dir`).
    pub fn buffer_dir(&self, name: &str) -> PathBuf {
        self.dir.join("data").join(name)
    }

    /// The listener.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What run `run` (from 1) logged.
    pub fn log(&self, run: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("sink.{run}.log"))).unwrap_or_default()
    }

    /// Starts it and waits (at most 10 s) until it listens.
    pub fn start(&mut self) {
        self.start_under(&[]);
    }

    /// [`Sink::start`] through `wrapper` (a command that runs the rest of its arguments, e.g.
    /// `prlimit --fsize=...`).
    pub fn start_under(&mut self, wrapper: &[&str]) {
        self.runs += 1;
        let log = std::fs::File::create(self.dir.join(format!("sink.{}.log", self.runs)))
            .expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["serve", "--config"])
            .arg(self.dir.join("sink.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn syslog-sink");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("syslog-sink exited ({st}): {}", self.log(self.runs));
            }
            assert!(Instant::now() < deadline, "not listening after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (`-KILL`, `-TERM`) and waits (at most 15 s) for the exit; returns the exit
    /// status (`None` when it was not running).
    pub fn signal(&mut self, sig: &str) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("syslog-sink did not exit on {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, and asserts a clean exit (status 0) within 15 s.
    pub fn stop(&mut self) {
        let st = self.signal("-TERM").expect("running");
        assert!(st.success(), "exit {st}: {}", self.log(self.runs));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The number after the last `seq=` of a record's bytes (a frame or a JSON line): the
/// messages of the tests and of the PKS sample end in `seq=NNNNNNNN`.
pub fn seq_in(record: &[u8]) -> Option<usize> {
    let i = memchr::memmem::rfind(record, b"seq=")?;
    std::str::from_utf8(record.get(i + 4..i + 12)?)
        .ok()?
        .parse()
        .ok()
}

/// A segment file and, per entry after the checkpoint, its file offset and the seqs of its
/// records.
pub type Segment = (PathBuf, Vec<(u64, Vec<usize>)>);

/// What a buffer folder holds after its checkpoint (what a restart delivers), read without
/// changing it: per segment file, per entry, the seqs. `frames`: the folder of a `syslog`
/// output (frames), else JSON lines. The output is number 0 of its config (bit 1).
pub fn buffered(dir: &Path, frames: bool) -> Vec<Segment> {
    let scan = syslog_sink::buffer::scan(dir, frames, 1).expect("scan the buffer");
    scan.segments
        .into_iter()
        .map(|(path, entries)| {
            let entries = entries
                .into_iter()
                .map(|(off, b)| {
                    let seqs = if frames {
                        b.frames
                            .iter()
                            .map(|f| seq_in(&f.data).expect("seq in a buffered frame"))
                            .collect()
                    } else {
                        b.json
                            .split(|&c| c == b'\n')
                            .filter(|l| !l.is_empty())
                            .map(|l| seq_in(l).expect("seq in a buffered record"))
                            .collect()
                    };
                    (off, seqs)
                })
                .collect();
            (path, entries)
        })
        .collect()
}

/// Every seq in the buffer folder after its checkpoint.
pub fn buffered_seqs(dir: &Path, frames: bool) -> BTreeSet<usize> {
    buffered(dir, frames)
        .into_iter()
        .flat_map(|(_, e)| e.into_iter().flat_map(|(_, s)| s))
        .collect()
}

/// Records after the checkpoint (one per seq occurrence).
pub fn buffered_records(dir: &Path, frames: bool) -> usize {
    buffered(dir, frames)
        .iter()
        .flat_map(|(_, e)| e.iter().map(|(_, s)| s.len()))
        .sum()
}

/// Waits (at most 15 s) until the buffer folder holds every seq of `want` after its
/// checkpoint.
pub async fn wait_buffered(dir: &Path, frames: bool, want: &BTreeSet<usize>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let have = buffered_seqs(dir, frames);
        if want.is_subset(&have) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "buffer holds {} of {} messages",
            want.intersection(&have).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most `limit`) until nothing is left after the buffer's checkpoint: every record
/// confirmed and the checkpoint written past it.
pub async fn wait_checkpointed(dir: &Path, frames: bool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = buffered_records(dir, frames);
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} records still after the checkpoint of {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the multiset of arrivals `counts` (per seq, the times it arrived): every seq of
/// `want` arrived, nothing else did, and a seq arrived twice only when it is in `may_repeat`
/// (never more than twice). Returns the seqs that arrived twice.
pub fn check_arrivals(
    counts: &HashMap<usize, usize>,
    want: &BTreeSet<usize>,
    may_repeat: &BTreeSet<usize>,
) -> BTreeSet<usize> {
    let missing: Vec<_> = want.iter().filter(|s| !counts.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "lost {} (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut extra: Vec<_> = counts.keys().filter(|s| !want.contains(s)).collect();
    extra.sort();
    assert!(extra.is_empty(), "unexpected seqs {extra:?}");
    let mut twice = BTreeSet::new();
    for (&seq, &n) in counts {
        match n {
            1 => {}
            2 if may_repeat.contains(&seq) => {
                twice.insert(seq);
            }
            _ => panic!(
                "seq {seq} arrived {n} times (may repeat: {})",
                may_repeat.contains(&seq)
            ),
        }
    }
    twice
}
