//! Command line: `serve`, `parse` (the offline twin of the server) and `check-config`.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Parser, Subcommand};
use tokio_util::codec::Decoder;

use crate::classify::Classifier;
use crate::config::Config;
use crate::framing::{
    Frame, FrameDecoder, FrameKind, FramingMode, Trailer, DEFAULT_MAX_FRAME_BYTES,
};
use crate::metrics::BatchCounts;
use crate::parse::Format;
use crate::record::{now_rfc3339, Encoder, RecordContext};
use crate::server::{serve, Stopped};

/// syslog-sink: RFC 5424 syslog over TCP in, classified JSON records out.
#[derive(Debug, Parser)]
#[command(name = "syslog-sink", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT/SIGTERM.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "config/syslog-sink.toml")]
        config: PathBuf,
    },
    /// Read a captured stream (FILE, or stdin) and print one JSON record per message, as the
    /// server would write them; a summary goes to stderr.
    Parse {
        /// How the stream is framed.
        #[arg(long, value_enum, default_value_t = FramingMode::Auto)]
        framing: FramingMode,
        /// What ends a non-transparent frame.
        #[arg(long, value_enum, default_value_t = Trailer::CrLf)]
        trailer: Trailer,
        /// Which syntax to accept.
        #[arg(long, value_enum, default_value_t = Format::Auto)]
        format: Format,
        /// Largest SYSLOG-MSG; longer ones are truncated.
        #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES as u64,
              value_parser = clap::value_parser!(u64).range(crate::config::MIN_FRAME_BYTES as u64..=crate::config::MAX_FRAME_BYTES as u64))]
        max_frame_bytes: u64,
        /// Print the frames the framer cut instead of records:
        /// `{"offset","length","frame_base64"}` or `{"offset","length","error",...}`.
        #[arg(long)]
        frames: bool,
        /// Take classification rules from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Captured stream; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Check a config file; names the bad key and why.
    CheckConfig {
        /// Config file.
        #[arg(long, short, default_value = "config/syslog-sink.toml")]
        config: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => run_serve(config),
        Command::Parse {
            framing,
            trailer,
            format,
            max_frame_bytes,
            frames,
            config,
            file,
        } => {
            let classifier = match config.map(|p| Config::load(&p)).transpose() {
                Ok(Some(c)) => c.classifier(),
                Ok(None) => Ok(Classifier::builtin()),
                Err(e) => Err(e),
            };
            let classifier = match classifier {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("syslog-sink: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = ParseOptions {
                framing,
                trailer,
                format,
                max_frame_bytes: max_frame_bytes as usize,
                frames,
            };
            let input: Box<dyn Read> = match &file {
                Some(p) => match std::fs::File::open(p) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        eprintln!("syslog-sink: cannot open {}: {e}", p.display());
                        return ExitCode::from(2);
                    }
                },
                None => Box::new(io::stdin().lock()),
            };
            let stdout = io::stdout().lock();
            match parse_stream(
                input,
                BufWriter::with_capacity(1 << 20, stdout),
                &opts,
                &classifier,
            ) {
                Ok(summary) => {
                    eprintln!("syslog-sink parse: {summary}");
                    ExitCode::SUCCESS
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("syslog-sink parse: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match load_and_check(&config) {
            Ok(c) => {
                let categories = c.classifier().map(|k| k.categories().len()).unwrap_or(0);
                println!(
                    "{}: OK ({} listener(s), {} output(s), {} categories)",
                    config.display(),
                    c.listen.len(),
                    c.output.len(),
                    categories
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("config error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// What `check-config` checks: the file, and that the disk-buffer folders can be made.
fn load_and_check(path: &std::path::Path) -> Result<Config, crate::config::ConfigError> {
    let c = Config::load(path)?;
    c.check_buffer_dirs()?;
    Ok(c)
}

fn run_serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syslog-sink: config error: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.server.log_level, config.server.log_format);
    ignore_sigxfsz();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("syslog-sink: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting");
    match runtime.block_on(serve(config, Some(&path))) {
        Ok(Stopped::Clean) => ExitCode::SUCCESS,
        Ok(Stopped::GraceExpired) => ExitCode::from(3),
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes a write past the file-size limit (`RLIMIT_FSIZE`, systemd's `LimitFSIZE=`) fail with
/// `EFBIG` instead of killing the process with `SIGXFSZ`: the file output and the disk buffer
/// then hold their records and retry, as on a full disk.
fn ignore_sigxfsz() {
    // SAFETY: SIG_IGN installs no handler (no code runs on the signal); called before the
    // runtime's threads exist.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Logs to stderr as text or JSON lines; `RUST_LOG` overrides the config's level.
fn init_logging(level: &str, format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
            .try_init(),
        crate::config::LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Options of `parse`.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Framing mode.
    pub framing: FramingMode,
    /// Trailer of non-transparent frames.
    pub trailer: Trailer,
    /// Syntax.
    pub format: Format,
    /// Frame size limit.
    pub max_frame_bytes: usize,
    /// Print frames instead of records.
    pub frames: bool,
}

/// What `parse` did.
#[derive(Debug, Clone, Default)]
pub struct ParseSummary {
    /// Bytes read.
    pub bytes: u64,
    /// Frames cut (each is one output line).
    pub frames: u64,
    /// What the records counted (all zero with `--frames`).
    pub counts: BatchCounts,
}

impl std::fmt::Display for ParseSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "{} bytes, {} frames, {} records ({} events, {} pod logs), {} parse errors, {} framing errors, {} truncated",
            self.bytes, self.frames, c.records, c.events, c.pod_logs, c.parse_errors,
            c.framing_errors, c.truncated
        )
    }
}

/// Reads a whole stream with bounded memory and writes records (or frames) to `out`.
pub fn parse_stream<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    opts: &ParseOptions,
    classifier: &Classifier,
) -> io::Result<ParseSummary> {
    const READ: usize = 256 << 10;
    let mut decoder =
        FrameDecoder::new(opts.framing, opts.max_frame_bytes).with_trailer(opts.trailer);
    let encoder = Encoder::new(opts.format, classifier);
    let mut summary = ParseSummary {
        counts: BatchCounts::new(classifier.categories().len()),
        ..ParseSummary::default()
    };
    let mut buf = BytesMut::with_capacity(READ);
    let mut json = BytesMut::new();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut eof = false;
    while !eof {
        buf.reserve(READ);
        let start = buf.len();
        buf.resize(start + READ, 0);
        let n = loop {
            match input.read(&mut buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        buf.truncate(start + n);
        summary.bytes += n as u64;
        eof = n == 0;
        let received_at = now_rfc3339();
        let ctx = RecordContext {
            received_at: &received_at,
            peer: None,
            peer_cert: None,
        };
        loop {
            let next = if eof {
                decoder.decode_eof(&mut buf)?
            } else {
                decoder.decode(&mut buf)?
            };
            let Some(frame) = next else { break };
            summary.frames += 1;
            if opts.frames {
                write_frame_json(&mut json, &frame);
            } else {
                encoder.encode(&frame, &ctx, &mut json, &mut summary.counts);
            }
            if json.len() >= READ {
                out.write_all(&json)?;
                json.clear();
            }
        }
        out.write_all(&json)?;
        json.clear();
        if last_progress.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "syslog-sink parse: {} MB, {} frames so far",
                summary.bytes >> 20,
                summary.frames
            );
            last_progress = Instant::now();
        }
    }
    out.flush()?;
    tracing::debug!(secs = started.elapsed().as_secs_f64(), "parse done");
    Ok(summary)
}

/// One line of `parse --frames`.
fn write_frame_json(out: &mut BytesMut, f: &Frame) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&f.data);
    let mut v = serde_json::json!({
        "offset": f.offset,
        "length": f.data.len(),
    });
    match f.kind {
        FrameKind::Complete => {
            v["frame_base64"] = b64.into();
        }
        FrameKind::Truncated {
            reason,
            declared_length,
        } => {
            v["frame_base64"] = b64.into();
            v["error"] = reason.code().into();
            v["truncated"] = true.into();
            v["declared_length"] = declared_length.into();
        }
        FrameKind::Error(kind) => {
            v["error"] = kind.code().into();
            v["raw_base64"] = b64.into();
        }
    }
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n");
}
