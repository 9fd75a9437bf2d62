#!/usr/bin/env bash
# Peak resident memory (VmHWM) of the release binary, on loopback, in two scenarios, each in a
# fresh server process so the peaks do not mix:
#
#   idle    : IDLE connections (default 1000) that connect and send nothing, held HOLD seconds;
#   partial : IDLE connections that each send all but 100 bytes of a maximal frame and stall
#             (the worst a slow sender can make the server hold: a whole frame per connection);
#   busy    : BUSY connections (default 50) each sending FRAMES maximal frames (64 KiB
#             SYSLOG-MSG, octet-counted) as fast as loopback takes them.
#
# Peak = the larger of VmHWM and VmRSS sampled every 50 ms (VmHWM lags on some kernels).
#
#   bash benches/rss.sh
#   IDLE=2000 BUSY=100 FRAMES=100 bash benches/rss.sh
#
# Uses the default listener settings (max_frame_bytes 65536, read_buffer_bytes 131072), except
# max_connections / max_connections_per_ip, raised because every client is 127.0.0.1. Bounded:
# each scenario gives up after TIMEOUT seconds. Needs python3 (the clients).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-16600}"
IDLE="${IDLE:-1000}"
BUSY="${BUSY:-50}"
FRAMES="${FRAMES:-100}"
HOLD="${HOLD:-3}"
TIMEOUT="${TIMEOUT:-120}"
WORK="$(mktemp -d /tmp/syslog-sink-rss.XXXXXX)"
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 8192

[ -x target/release/syslog-sink ] && [ -z "$(find src -newer target/release/syslog-sink)" ] ||
  cargo build --release --quiet

kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$PID/status"; }

# Samples VmRSS every 50 ms into $WORK/rss until the server ends.
sample() {
  while kill -0 "$PID" 2>/dev/null; do
    kb VmRSS 2>/dev/null || true
    sleep 0.05
  done >"$WORK/rss"
}

# The scenario's peak: max(VmHWM, sampled VmRSS).
peak() {
  { kb VmHWM; cat "$WORK/rss"; } | sort -n | tail -1
}

start_server() {
  rm -f "$WORK/out.jsonl"
  cat >"$WORK/rss.toml" <<TOML
[server]
summary_interval_secs = 0
log_level = "warn"
[[listen]]
address = "127.0.0.1:$PORT"
max_connections = 100000
max_connections_per_ip = 100000
[[output]]
name = "rss"
type = "file"
path = "$WORK/out.jsonl"
TOML
  target/release/syslog-sink serve --config "$WORK/rss.toml" 2>"$WORK/server.log" &
  PID=$!
  sample &
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT)).close()" 2>/dev/null && return
    sleep 0.05
  done
  echo "server did not start" >&2; cat "$WORK/server.log" >&2; exit 1
}

stop_server() {
  kill -TERM "$PID"
  wait "$PID" || true
  PID=
}

# idle / partial: IDLE sockets, each sending nothing or all but 100 bytes of a maximal frame,
# held HOLD seconds.
hold() {
  timeout "$TIMEOUT" python3 - "$PORT" "$IDLE" "$HOLD" "$1" <<'PY'
import socket, sys, time
port, n, hold, partial = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "partial"
head = b"65536 <14>1 2026-11-26T10:00:00Z host app - - - "
chunk = head + b"x" * (65536 + 6 - 100 - len(head))
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if partial:
        s.sendall(chunk)
    socks.append(s)
time.sleep(hold)
for s in socks:
    s.close()
PY
}
start_server
base=$(kb VmRSS)
hold idle
idle_peak=$(peak)
stop_server
start_server
hold partial
partial_peak=$(peak)
stop_server
partial_records=$(wc -l <"$WORK/out.jsonl")

# busy: BUSY connections, FRAMES maximal frames each; wait until every record is written.
start_server
expect=$((BUSY * FRAMES))
started=$(date +%s.%N)
timeout "$TIMEOUT" python3 - "$PORT" "$BUSY" "$FRAMES" <<'PY'
import socket, sys, threading
port, n, frames = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
head = b"<14>1 2026-11-26T10:00:00Z host app - - - "
def client(i):
    msg = head + (b"%04d " % i) + b"x" * (65536 - len(head) - 5)
    frame = b"65536 " + msg
    s = socket.create_connection(("127.0.0.1", port))
    for _ in range(frames):
        s.sendall(frame)
    s.close()
ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
[t.start() for t in ts]
[t.join() for t in ts]
PY
deadline=$(( $(date +%s) + TIMEOUT ))
while [ "$(wc -l <"$WORK/out.jsonl" 2>/dev/null || echo 0)" -lt "$expect" ] && [ "$(date +%s)" -lt "$deadline" ]; do
  sleep 0.2
done
secs=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
busy_peak=$(peak)
records=$(wc -l <"$WORK/out.jsonl")
truncated=$(grep -c '"truncated"' "$WORK/out.jsonl" || true)
stop_server

echo "binary: target/release/syslog-sink ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "baseline RSS, no connections:                    ${base} kB"
echo "peak RSS, ${IDLE} idle connections:                 ${idle_peak} kB"
echo "peak RSS, ${IDLE} connections holding 64 KiB each:  ${partial_peak} kB  (${partial_records} truncated records at close)"
echo "peak RSS, ${BUSY} connections x ${FRAMES} x 64 KiB frames: ${busy_peak} kB  (${records}/${expect} records, ${truncated} truncated, ${secs} s)"
[ "$records" -eq "$expect" ] || { echo "records missing" >&2; exit 1; }
[ "$partial_records" -eq "$IDLE" ] || { echo "partial frames missing" >&2; exit 1; }
