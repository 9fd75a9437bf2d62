//! `file` output: JSON lines appended to a file, written in large vectored writes on a blocking
//! thread, flushed on the output's interval and at shutdown (then synced to disk).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Output, Pending};

/// Write once this much is pending, without waiting for the flush interval.
const FLUSH_AT: usize = 1 << 20;

/// Appends JSON lines to a file.
#[derive(Debug)]
pub struct FileOutput {
    path: PathBuf,
    pending: Pending<File>,
}

impl FileOutput {
    /// Opens (creates, appends to) `path`, creating its parent folders.
    pub fn open(path: &Path) -> io::Result<FileOutput> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create folder {}: {e}", dir.display()),
                    )
                })?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        Ok(FileOutput {
            path: path.to_path_buf(),
            pending: Pending::new(file, FLUSH_AT),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Output for FileOutput {
    async fn write(&mut self, lines: Bytes) -> io::Result<()> {
        self.pending.push(lines).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.pending.flush().await
    }

    async fn close(&mut self) -> io::Result<()> {
        match self.pending.writer() {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}
