#!/usr/bin/env bash
# The soak against the original and this project's server, alternated in
# one run, at a size the original can carry (issue 16 point 3).
#
#   NSQLOOKUPD=/path/to/go/nsqlookupd perf/soak_vs.sh [OUT_DIR [BENCH_ARGS...]]
#
# Each round runs perf/soak.sh twice on a fresh server each time: first the
# original with --rate 0 (open loop at half of the closed-loop maximum it
# reaches with the fleet churning), then this project's release build at
# the same rate, so that both carry the same load and their latencies,
# memory and CPU compare. Files: OUT_DIR/soak.go.rN.* and soak.rs.rN.*
# (see perf/soak.sh), and OUT_DIR/summary.md, the side-by-side table (also
# printed). Exit status: 0 when every run of this project's server passed
# (the original's failures are reported, not fatal), 1 otherwise.
#
# Environment:
#   NSQLOOKUPD   the original (required)
#   SERVER_BIN   this project's server (default target/release/nsqlookupd,
#                built with the bench when missing)
#   BENCH_BIN    the bench (default target/release/nsqlookupd-bench)
#   NODES        fleet size (default 100: the original fails the soak at
#                500, TCP answers timing out at 10 s, see perf/README.md)
#   ROUNDS       rounds (default 1)
#   DURATION     each soak's length (default 10m)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-perf/results/soak-vs}
shift || true
mkdir -p "$out"
: "${NSQLOOKUPD:?NSQLOOKUPD=/path/to/the/original/nsqlookupd}"
ours=${SERVER_BIN:-target/release/nsqlookupd}
bench=${BENCH_BIN:-target/release/nsqlookupd-bench}
if [ ! -x "$ours" ] || [ ! -x "$bench" ]; then
    cargo build --release --bin nsqlookupd --bin nsqlookupd-bench
fi
nodes=${NODES:-100}
rounds=${ROUNDS:-1}
export DURATION=${DURATION:-10m}

status=0
for r in $(seq "$rounds"); do
    echo "== round $r: the original ($NSQLOOKUPD)"
    TAG=.go.r$r SERVER_BIN=$NSQLOOKUPD BENCH_BIN=$bench \
        bash perf/soak.sh "$out" --nodes "$nodes" --rate 0 "$@" || true
    rate=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["soak"]["rate"]))' "$out/soak.go.r$r.json")
    echo "== round $r: this project's server ($ours) at the original's rate, $rate/s"
    TAG=.rs.r$r SERVER_BIN=$ours BENCH_BIN=$bench \
        bash perf/soak.sh "$out" --nodes "$nodes" --rate "$rate" "$@" || status=1
done

python3 - "$out" "$rounds" <<'EOF' | tee "$out/summary.md"
import json, sys

out, rounds = sys.argv[1], int(sys.argv[2])

def ms(us):
    if us is None:
        return "-"
    return f"{us} us" if us < 1000 else f"{us / 1000:.1f} ms" if us < 1_000_000 else f"{us / 1e6:.2f} s"

def row(j):
    s, lk = j["soak"], j["lookups"]
    lat, byk = lk["latency"], lk["latency_by_kind"]
    mins = [m["lookup"]["p99_us"] for m in s["minutes"]]
    rss = [x["rss_kib"] / 1024 for x in s["samples"]]
    fds = [x["fds"] for x in s["samples"]]
    cores = [x["server_cores"] for x in s["samples"]]
    d = s["drift"]
    def drift(k, unit):
        v = d.get(k)
        if not v:
            return "not computed"
        f = (lambda x: f"{x / 1024:.1f}") if unit == "MiB" else (lambda x: f"{x:.0f}")
        return f"{f(v['base_mean'])} -> {f(v['last_mean'])} {unit} ({v['change_pct']:+.2f} %, {'within' if v['within'] else 'OVER'} bound)"
    reg = j["registration"]
    nodes = byk.get("nodes", {})
    return {
        "server": j["label"],
        "passed": "PASS" if j["passed"] else "FAIL: " + "; ".join(j["problems"]),
        "registration": f"{reg['registrations']:,} REGISTERs in {reg['seconds']:.2f} s, {reg['server_cpu_us_per_registration']:.1f} us server CPU each",
        "closed-loop maximum": f"{s['measured_max_per_second']:,.0f} req/s" if s.get("measured_max_per_second") else "not measured (rate given)",
        "open-loop rate": f"{s['rate']:,.0f} req/s for {s['duration_s']:.0f} s, {lk['requests_ok']:,} answers",
        "errors by kind": json.dumps(s["errors"]) if s["errors"] else "none",
        "TCP answers > 100 ms / > 1 s": f"{s['tcp_over_100ms']:,} / {s['tcp_over_1s']:,} (slowest {ms(s['tcp_max_us'])})",
        "lookup p50 / p99 / p99.9 / max": " / ".join(ms(lat[k]) for k in ("p50_us", "p99_us", "p999_us", "max_us")),
        "lookup p99 per minute": f"{ms(min(mins))} - {ms(max(mins))}",
        "/nodes p50 / max": f"{ms(nodes.get('p50_us'))} / {ms(nodes.get('max_us'))}" if nodes else "-",
        "server cores (10 s samples)": f"{min(cores):.2f} - {max(cores):.2f}",
        "RSS (10 s samples)": f"{min(rss):.1f} - {max(rss):.1f} MiB",
        "RSS drift": drift("rss", "MiB"),
        "descriptors (10 s samples)": f"{min(fds)} - {max(fds)}",
        "descriptor drift": drift("fds", ""),
        "checks": f"{j['checks']['sampled']:,} sampled + {s['soak_checks']:,} soak + {j['checks']['final_checked']:,} at rest, {j['checks']['sampled_failed'] + s['soak_checks_failed'] + j['checks']['final_failed']} wrong",
    }

for r in range(1, rounds + 1):
    go = row(json.load(open(f"{out}/soak.go.r{r}.json")))
    rs = row(json.load(open(f"{out}/soak.rs.r{r}.json")))
    print(f"### round {r}\n")
    print("| figure | original | nsqlookupd-rs |\n|---|---|---|")
    for k in go:
        print(f"| {k} | {go[k]} | {rs[k]} |")
    print()
EOF
exit "$status"
