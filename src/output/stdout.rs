//! `stdout` output: JSON lines on standard output (for `docker logs`, a pipe, a terminal).

use std::io::{self, Stdout};

use bytes::Bytes;

use super::{Output, Pending};

/// Write once this much is pending, without waiting for the flush interval.
const FLUSH_AT: usize = 256 << 10;

/// Writes JSON lines to standard output.
#[derive(Debug)]
pub struct StdoutOutput {
    pending: Pending<Stdout>,
}

impl StdoutOutput {
    /// Standard output of the process.
    pub fn new() -> StdoutOutput {
        StdoutOutput {
            pending: Pending::new(io::stdout(), FLUSH_AT),
        }
    }
}

impl Default for StdoutOutput {
    fn default() -> Self {
        StdoutOutput::new()
    }
}

impl Output for StdoutOutput {
    async fn write(&mut self, lines: Bytes) -> io::Result<()> {
        self.pending.push(lines).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.pending.flush().await
    }
}
