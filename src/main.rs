//! The `syslog-sink` binary: see [`syslog_sink::cli`].

fn main() -> std::process::ExitCode {
    syslog_sink::cli::main()
}
