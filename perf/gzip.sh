#!/usr/bin/env bash
# gzip answers against the two ceilings, in alternating rounds in one run
# (issue 15, point 5):
#
#   perf/gzip.sh PRESET [ROUNDS [JSON]]              (default 3 rounds)
#   RATE=N perf/gzip.sh PRESET [ROUNDS [JSON]]       (open loop at N/s)
#   RT=P ... perf/gzip.sh ...   every process at SCHED_FIFO priority P (the
#                               VM's ~20 ms stalls at normal priority make
#                               every open-loop tail; see perf/README.md)
#
# One server with PRESET's fleet registered, pinned to core 0 (the ceiling
# servers too), loads from core 1, 64 keep-alive connections, 3 s of
# warm-up + 8 s measured each. Each round, in turn:
#   ceiling-single-plain    one body of the answer size, plain (the limit of
#                           the original's approach: one answer, in cache)
#   ceiling-distinct-gzip   one real /lookup-shaped answer per topic, gzip
#                           (the memory traffic of as many answers as the
#                           server keeps, in the encoding clients ask for)
#   ceiling-distinct-plain  the same, plain
#   server-plain            the server, no Accept-Encoding (today's bytes)
#   server-gzip             the server, Accept-Encoding: gzip
# The bench inflates only the answers it samples for checking
# (--gzip-decode checked), on both sides, so that inflating 48 KB answers
# does not make the load generator the bottleneck. Prints one line a round,
# then the medians of the per-round ratios; with JSON writes them there.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh
preset=${1:?usage: perf/gzip.sh PRESET [ROUNDS [JSON]]}
rounds=${2:-3}
json_out=${3:-}
release_binaries
rt=()
[ -n "${RT:-}" ] && rt=(chrt -f "$RT")
tmp=$(mktemp -d)
start_server "$tmp/server.log" "${rt[@]}" taskset -c 0 "$server"
pid=$server_pid tcp=$server_tcp http=$server_http
trap 'kill $pid ${fleet:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
taskset -c 1 "$bench" fleet --preset "$preset" --tcp-address "$tcp" --duration 3600s >"$tmp/fleet.log" 2>&1 &
fleet=$!
for _ in $(seq 1200); do grep -q "registered in" "$tmp/fleet.log" && break; sleep 0.5; done
load=(--preset "$preset" --workers 64 --warmup 3s --duration 8s --gzip-decode checked ${RATE:+--rate "$RATE"})
for r in $(seq "$rounds"); do
    "${rt[@]}" taskset -c 1 "$bench" ceiling "${load[@]}" --ceiling-kind single --ceiling-cpus 0 \
        --json "$tmp/ceiling-single-plain-$r.json" >/dev/null 2>&1
    "${rt[@]}" taskset -c 1 "$bench" ceiling "${load[@]}" --ceiling-kind distinct --accept-gzip --ceiling-cpus 0 \
        --json "$tmp/ceiling-distinct-gzip-$r.json" >/dev/null 2>&1
    "${rt[@]}" taskset -c 1 "$bench" ceiling "${load[@]}" --ceiling-kind distinct --ceiling-cpus 0 \
        --json "$tmp/ceiling-distinct-plain-$r.json" >/dev/null 2>&1
    "${rt[@]}" taskset -c 1 "$bench" consumers "${load[@]}" --http-address "$http" --server-pid "$pid" \
        --json "$tmp/server-plain-$r.json" >/dev/null 2>&1
    "${rt[@]}" taskset -c 1 "$bench" consumers "${load[@]}" --accept-gzip --http-address "$http" --server-pid "$pid" \
        --json "$tmp/server-gzip-$r.json" >/dev/null 2>&1
done
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
curl -s "http://$http/metrics" | grep -E '^nsqlookupd_(gzip_renders|http_gzip_|lookup_cache_bytes)' >"$tmp/metrics.txt" || true

python3 - "$tmp" "$preset" "$rounds" "$rss_kb" "$json_out" <<'PY'
import json, statistics, sys
tmp, preset, rounds, rss_kb, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
kinds = {"ceiling-single-plain": "ceiling", "ceiling-distinct-gzip": "ceiling_distinct",
         "ceiling-distinct-plain": "ceiling_distinct", "server-plain": "lookups", "server-gzip": "lookups"}
fig = {k: [] for k in kinds}
for r in range(1, rounds + 1):
    line = []
    for k, key in kinds.items():
        l = json.load(open(f"{tmp}/{k}-{r}.json"))[key]
        enc = l.get("encoding") or {}
        f = {"per_second": l["per_second"],
             "errors": sum((l.get("errors") or {}).values()),
             "wire_bytes": enc.get("wire_body_bytes_mean", l.get("mean_body_bytes")),
             "content_bytes": enc.get("content_body_bytes_mean", l.get("mean_body_bytes")),
             "answers_gzip": enc.get("answers_gzip", 0),
             "p50_us": l["latency"]["p50_us"], "p99_us": l["latency"]["p99_us"],
             "p999_us": l["latency"]["p999_us"], "unsent": l.get("unsent", 0),
             "server_cores": (l.get("server") or {}).get("cores"),
             "bench_cores": (l.get("load_generator") or {}).get("cores")}
        fig[k].append(f)
        tail = f", p99 {f['p99_us'] / 1000:.2f} / p99.9 {f['p999_us'] / 1000:.2f} ms" if l.get("rate") else ""
        line.append(f"{k} {f['per_second']:,.0f}/s ({f['wire_bytes']:,.0f} B{tail})")
    print(f"{preset} round {r}: " + "; ".join(line))
def ratios(a, b):
    return [x["per_second"] / y["per_second"] for x, y in zip(fig[a], fig[b])]
pairs = {
    "server-gzip / ceiling-single-plain (target >= 1.0)": ratios("server-gzip", "ceiling-single-plain"),
    "server-gzip / ceiling-distinct-gzip (target >= 0.9)": ratios("server-gzip", "ceiling-distinct-gzip"),
    "server-plain / ceiling-distinct-plain": ratios("server-plain", "ceiling-distinct-plain"),
    "server-plain / ceiling-single-plain": ratios("server-plain", "ceiling-single-plain"),
    "server-gzip / server-plain": ratios("server-gzip", "server-plain"),
}
tails = {}
if json.load(open(f"{tmp}/server-plain-1.json"))["lookups"].get("rate"):
    # Open loop (issue 15, point 6): the server's p99 against the ceiling's
    # at the same rate, per round (target <= 1.5), and its p99.9 (<= 5 ms).
    def p99_ratios(a, b):
        return [x["p99_us"] / y["p99_us"] for x, y in zip(fig[a], fig[b])]
    tails = {
        "server-plain p99 / ceiling-single-plain p99 (target <= 1.5)": p99_ratios("server-plain", "ceiling-single-plain"),
        "server-plain p99 / ceiling-distinct-plain p99 (target <= 1.5)": p99_ratios("server-plain", "ceiling-distinct-plain"),
        "server-gzip p99 / ceiling-distinct-gzip p99 (target <= 1.5)": p99_ratios("server-gzip", "ceiling-distinct-gzip"),
        "server-gzip p99 / ceiling-single-plain p99 (target <= 1.5)": p99_ratios("server-gzip", "ceiling-single-plain"),
    }
    pairs = {}
    for name, v in tails.items():
        print(f"{preset}: {name}: per round {', '.join(f'{x:.2f}' for x in v)}; median {statistics.median(v):.2f}")
    for k in fig:
        p99 = ", ".join(f"{x['p99_us'] / 1000:.2f}" for x in fig[k])
        p999 = ", ".join(f"{x['p999_us'] / 1000:.2f}" for x in fig[k])
        unsent = sum(x["unsent"] or 0 for x in fig[k])
        print(f"{preset}: {k}: p99 {p99} ms; p99.9 {p999} ms (target <= 5 ms); unsent {unsent}")
for name, v in pairs.items():
    print(f"{preset}: {name}: per round {', '.join(f'{x:.2f}' for x in v)}; median {statistics.median(v):.2f}")
for k in ("server-plain", "server-gzip"):
    f = fig[k][-1]
    print(f"{preset}: {k}: {f['wire_bytes']:,.0f} bytes on the wire per answer ({f['content_bytes']:,.0f} decompressed), errors {sum(x['errors'] for x in fig[k])}")
print(f"{preset}: server RSS at the end {rss_kb / 1024:,.1f} MiB")
print(open(f"{tmp}/metrics.txt").read().strip())
if out:
    json.dump({"preset": preset, "rounds": fig, "ratios": pairs,
               "median_ratios": {n: statistics.median(v) for n, v in pairs.items()},
               "tails": tails, "median_tail_ratios": {n: statistics.median(v) for n, v in tails.items()},
               "rss_kib": rss_kb}, open(out, "w"), indent=2)
PY
