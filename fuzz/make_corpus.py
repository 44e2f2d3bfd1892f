#!/usr/bin/env python3
"""Builds the fuzz seed corpora from the conformance cases.

    python3 fuzz/make_corpus.py            # from the repository root

Reads tests/conformance/cases/*.json and writes:

- fuzz/corpus/tcp_session/<case>.<conn>[.<n>]: the bytes one scenario sends
  on one connection, in order (the magic unless the connect step says
  "magic": false, then every "send" and "identify" step concatenated);
- fuzz/corpus/http_query/<case>.<n>: the request target (path and query
  string) of each "http" step.

Identical inputs are written once. Existing files in those two folders are
replaced, so the corpus always matches the cases.
"""

import json
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "conformance" / "cases"
OUT = ROOT / "fuzz" / "corpus"
MAGIC = b"  V1"


def identify_bytes(step):
    """IDENTIFY\\n, the 4-byte big-endian size, the body (as the runner sends it)."""
    if "body" in step:
        body = json.dumps(step["body"], separators=(",", ":")).encode()
    else:
        body = step["body_text"].encode()
    return b"IDENTIFY\n" + struct.pack(">i", len(body)) + body


def send_bytes(step):
    if "text" in step:
        return step["text"].encode()
    return bytes.fromhex(step["hex"])


def streams(case):
    """(name, bytes) per connection opened by the case."""
    open_streams = {}  # conn name -> index into out
    out = []
    opened = {}
    for step in case["steps"]:
        op = step["op"]
        conn = step.get("conn")
        if op == "connect":
            n = opened.get(conn, 0)
            opened[conn] = n + 1
            name = f"{case['name']}.{conn}" + (f".{n}" if n else "")
            open_streams[conn] = len(out)
            out.append([name, MAGIC if step.get("magic", True) else b""])
        elif op == "send":
            out[open_streams[conn]][1] += send_bytes(step)
        elif op == "identify":
            out[open_streams[conn]][1] += identify_bytes(step)
    return [(name, data) for name, data in out]


def http_targets(case):
    return [
        (f"{case['name']}.{i}", step["path"].encode())
        for i, step in enumerate(s for s in case["steps"] if s["op"] == "http")
    ]


def write(target, items):
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    seen = set()
    for name, data in items:
        if data in seen:
            continue
        seen.add(data)
        (folder / name).write_bytes(data)
    return len(seen)


def main():
    cases = [json.loads(p.read_text()) for p in sorted(CASES.glob("*.json"))]
    if not cases:
        sys.exit(f"no cases in {CASES}")
    tcp = [item for case in cases for item in streams(case)]
    http = [item for case in cases for item in http_targets(case)]
    print(f"tcp_session: {write('tcp_session', tcp)} inputs")
    print(f"http_query: {write('http_query', http)} inputs")


if __name__ == "__main__":
    main()
