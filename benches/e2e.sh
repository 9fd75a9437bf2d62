#!/usr/bin/env bash
# End-to-end throughput of syslog-sink beside rsyslog and syslog-ng, measured by the shared
# harness (../shared/bench, or BENCH_DIR) in one interleaved suite over loopback.
#
#   bash benches/e2e.sh                          # 1M messages, 3 rounds, 1 and 4 connections
#   N=200000 REPS=1 CONNS="1" SERVERS="generic rsyslog" bash benches/e2e.sh
#   E2E_SERVER_EXTRA="max_inflight_bytes = 8388608" CONNS=64 SERVERS=generic bash benches/e2e.sh
#                                                  # extra [server] lines for syslog-sink
#
# The harness verifies every message arrived exactly once and every line is JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-../shared/bench}"
N="${N:-1000000}"
REPS="${REPS:-3}"
CONNS="${CONNS:-1 4}"
SERVERS="${SERVERS:-ceiling rsyslog syslog-ng generic}"
PORT="${PORT:-16514}"
WORK="${BENCH_WORK:-/tmp/syslog-sink-bench}"
mkdir -p "$WORK"
OUT="$WORK/syslog-sink-out.jsonl"
CFG="$WORK/syslog-sink-bench.toml"

[ -x target/release/syslog-sink ] && [ target/release/syslog-sink -nt src/server.rs ] || cargo build --release
cat > "$CFG" <<TOML
[server]
summary_interval_secs = 0
${E2E_SERVER_EXTRA:-}
[[listen]]
address = "127.0.0.1:$PORT"
[[output]]
name = "bench"
type = "file"
path = "$OUT"
TOML
[ -x "$WORK/target/release/bench-send" ] || bash "$BENCH_DIR/bench.sh" setup
bash "$BENCH_DIR/bench.sh" suite -n "$N" --reps "$REPS" --conns "$CONNS" --servers "$SERVERS" \
  --name syslog-sink --port "$PORT" --out "$OUT" --verify json --json-app-key app_name \
  --cmd "$PWD/target/release/syslog-sink serve --config $CFG"
