#!/usr/bin/env bash
# What compressing costs under churn (issue 15, point 2), at one preset:
#
#   perf/gzip_churn.sh PRESET [ROUNDS [RATE [CHURN]]]
#       defaults: 2 rounds, 5000 lookups/s, one node reconnecting a second
#
# Each round runs, in turn, a server with compression on (the default) and
# one with --http-compression=false, each with PRESET's fleet registered by
# `run` and then churned (CHURN of the nodes disconnect and register again
# every second: at large, one node of 500 re-registers its 10,000 topics a
# second, so half of all the answers change every second), while gzip
# consumers look up open loop at RATE/s for 30 s (64 connections,
# answers sampled and checked). Servers on core 0, the bench on core 1.
# Reports per mode: the server's CPU over the load (cores, and us per
# lookup), the compressions made (`nsqlookupd_gzip_renders_total`), the
# nsqd answers during churn (PINGs and re-registrations: p99 and max;
# target max < 100 ms), lookup tails and errors. The difference in CPU
# between the modes is what compressing costs.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh
preset=${1:?usage: perf/gzip_churn.sh PRESET [ROUNDS [RATE [CHURN]]]}
rounds=${2:-2}
rate=${3:-5000}
release_binaries
tmp=$(mktemp -d)
trap 'kill ${pid:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
case $preset in small) nodes=10 ;; medium) nodes=100 ;; *) nodes=500 ;; esac
churn=${4:-$(python3 -c "print(1 / $nodes)")}
echo "$preset: rate $rate/s, churn $churn of the $nodes nodes a second"
for r in $(seq "$rounds"); do
    for mode in on off; do
        start_server "$tmp/server.log" taskset -c 0 "$server" --http-compression=$([ $mode = on ] && echo true || echo false)
        pid=$server_pid
        taskset -c 1 "$bench" run --preset "$preset" --tcp-address "$server_tcp" --http-address "$server_http" \
            --server-pid "$pid" --churn "$churn" --rate "$rate" --workers 64 --warmup 5s --duration 30s \
            --accept-gzip --gzip-decode checked --check-sample 0.001 \
            --json "$tmp/$mode-$r.json" >"$tmp/$mode-$r.txt" 2>&1 || true
        curl -s "http://$server_http/metrics" | awk '/^nsqlookupd_gzip_renders_total/ {print $2}' >"$tmp/$mode-$r.renders"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        python3 - "$tmp/$mode-$r.json" "$(cat "$tmp/$mode-$r.renders")" "$mode" "$r" <<'PY'
import json, sys
rep, renders, mode, r = json.load(open(sys.argv[1])), sys.argv[2] or "0", sys.argv[3], sys.argv[4]
l, s = rep["lookups"], rep["steady"]
cpu = l["server"]["cpu_s"]
errors = sum((l.get("errors") or {}).values()) + sum((rep.get("tcp_errors") or {}).values())
print(f"round {r} compression {mode}: {l['per_second']:,.0f} lookups/s, server {l['server']['cores']:.2f} cores "
      f"({cpu / max(l['requests_ok'], 1) * 1e6:.1f} us a lookup), {int(float(renders)):,} compressions in all; "
      f"nsqd answers during churn ({s['churn_restarts']} restarts, {s['registrations']:,} REGISTERs): "
      f"p99 {s['tcp_latency']['p99_us'] / 1000:.2f} ms, max {s['tcp_latency']['max_us'] / 1000:.2f} ms; "
      f"lookup p99 {l['latency']['p99_us'] / 1000:.2f} ms, p99.9 {l['latency']['p999_us'] / 1000:.2f} ms; "
      f"errors {errors}, unsent {l.get('unsent', 0)}, passed {rep['passed']}")
PY
    done
done
