#!/usr/bin/env bash
# The server's /lookup rate next to the ceiling's, measured in alternating
# rounds against one registered fleet, so that a drift of the machine's
# speed between the two measurements (on a shared VM, ±10 %) hits both.
#
#   perf/alternate.sh PRESET [ROUNDS]        (default 3 rounds)
#
# Server and ceiling server pinned to core 0, bench to core 1; each round:
# `ceiling --ceiling-cpus 0`, then `consumers` against the server, 64
# connections, 3 s of warm-up + 8 s measured each. Prints one line a round:
# both rates, and the CPU each server process spent per request, user +
# system (its share of a core over the round, warm-up included, divided by
# the measured rate), so that a gap between the two can be placed.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh
preset=${1:?usage: perf/alternate.sh PRESET [ROUNDS]}
rounds=${2:-3}
server=${SERVER_BIN:-target/release/nsqlookupd}
bench=${BENCH_BIN:-target/release/nsqlookupd-bench}
[ -n "${SERVER_BIN:-}" ] || cargo build --release --bin nsqlookupd --bin nsqlookupd-bench
tmp=$(mktemp -d)
start_server "$tmp/server.log" taskset -c 0 "$server"
pid=$server_pid tcp=$server_tcp http=$server_http
trap 'kill $pid ${fleet:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
taskset -c 1 "$bench" fleet --preset "$preset" --tcp-address "$tcp" --duration 3600s >"$tmp/fleet.log" 2>&1 &
fleet=$!
for _ in $(seq 1200); do grep -q "registered in" "$tmp/fleet.log" && break; sleep 0.5; done
load=(--preset "$preset" --workers 64 --warmup 3s --duration 8s)
for r in $(seq "$rounds"); do
    taskset -c 1 "$bench" ceiling "${load[@]}" --ceiling-cpus 0 --json "$tmp/c.json" >/dev/null 2>&1
    taskset -c 1 "$bench" consumers "${load[@]}" --http-address "$http" --server-pid "$pid" --json "$tmp/s.json" >/dev/null 2>&1
    python3 - "$tmp/c.json" "$tmp/s.json" "$preset" "$r" <<'PY'
import json, sys
def load(path, key):
    r = json.load(open(path))[key]
    p = r["server"]
    sys_share = p["system_s"] / p["cpu_s"] if p["cpu_s"] else 0.0
    us = p["cores"] * 1e6 / r["per_second"]
    return r["per_second"], f"{us * (1 - sys_share):.2f} + {us * sys_share:.2f} us"
c, ccpu = load(sys.argv[1], "ceiling")
s, scpu = load(sys.argv[2], "lookups")
print(f"{sys.argv[3]} round {sys.argv[4]}: ceiling {c:,.0f} req/s, server {s:,.0f} req/s = {s / c:.1%}"
      f"; CPU per request (user + system): ceiling {ccpu}, server {scpu}")
PY
done
