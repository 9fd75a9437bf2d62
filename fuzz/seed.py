#!/usr/bin/env python3
"""Writes the seed corpus of both fuzz targets from the test data (run from fuzz/).

framing: conformance streams of tests/data/framing.jsonl and PKS sample prefixes, each behind
the target's 3-byte header (mode/trailer, max_frame_bytes, no extra chunking).
parse: RFC 5424 vectors of tests/data/rfc5424.jsonl and single PKS frames, behind a kind byte.
"""
import base64, json, os

DATA = "../tests/data"
MODES = {"auto": 0, "octet": 1, "lf": 2}


def write(target, name, blob):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(blob)


def octet_frames(data, n):
    out, pos = [], 0
    while pos < len(data) and len(out) < n:
        sp = data.index(b" ", pos)
        ln = int(data[pos:sp])
        out.append(data[pos:sp + 1 + ln])
        pos = sp + 1 + ln
    return out


vectors = [json.loads(l) for l in open(f"{DATA}/framing.jsonl")]
for i, v in enumerate(vectors[::2][:24]):
    stream = base64.b64decode(v["stream_b64"])
    # Limit byte 255 = 1 + 55*64 (3521) keeps the vector's own limit out of the way; 20 = tiny.
    limit = 255 if i % 3 else 20
    write("framing", f"conf-{i:02}", bytes([MODES.get(v["mode"], 0), limit, 0]) + stream)

octet = open(f"{DATA}/pks-sink-2k.octet", "rb").read()
lf = open(f"{DATA}/pks-sink-2k.lf", "rb").read()
frames = octet_frames(octet, 40)
write("framing", "pks-octet-3", bytes([1, 255, 2, 7, 200]) + b"".join(frames[:3]))
write("framing", "pks-auto-mixed", bytes([0, 30, 1, 13]) + frames[0] + lf[: lf.index(b"\n") + 1] + frames[1])
write("framing", "pks-lf-2", bytes([2, 255, 0]) + lf[: lf.index(b"\n", lf.index(b"\n") + 1) + 1])
write("framing", "hostile-len", bytes([1, 10, 0]) + b"999999999999 abc\n5 hello")

rfc = [json.loads(l) for l in open(f"{DATA}/rfc5424.jsonl")]
for i, v in enumerate(rfc[::9][:30]):
    raw = base64.b64decode(v["input_b64"]) if "input_b64" in v else v["input"].encode()
    write("parse", f"rfc5424-{i:02}", bytes([i % 5]) + raw)
for i, f in enumerate(frames[::4][:10]):
    body = f[f.index(b" ") + 1:]
    write("parse", f"pks-{i:02}", bytes([0]) + body)
write("parse", "rfc3164", b"\x00<13>Nov 26 10:00:00 myhost sshd[42]: Accepted publickey for bob")
