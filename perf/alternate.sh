#!/usr/bin/env bash
# The server's /lookup rate next to the ceiling's, measured in alternating
# rounds against one registered fleet, so that a drift of the machine's
# speed between the two measurements (on a shared VM, ±10 %) hits both.
#
#   perf/alternate.sh PRESET [ROUNDS [JSON]]       (default 3 rounds)
#   RATE=N perf/alternate.sh PRESET [ROUNDS [JSON]]  (open loop at N/s)
#
# Server and ceiling server pinned to core 0, bench to core 1; each round:
# `ceiling --ceiling-cpus 0`, then `consumers` against the server, 64
# connections, 3 s of warm-up + 8 s measured each. Prints one line a round:
# both rates, and the CPU each server process spent per request, user +
# system (its share of a core over the round, warm-up included, divided by
# the measured rate), so that a gap between the two can be placed. With
# JSON, also writes every round's figures and the median ratio there
# (perf/targets.sh judges target 1 on that median).
#
# With RATE, both are loaded open loop at RATE requests/s instead, and each
# round also prints both latency distributions: what the ceiling's tail
# looks like at that rate on this machine in the same minute is the floor
# under the server's (perf/targets.sh, target 2).
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh
preset=${1:?usage: perf/alternate.sh PRESET [ROUNDS [JSON]]}
rounds=${2:-3}
json_out=${3:-}
release_binaries
tmp=$(mktemp -d)
start_server "$tmp/server.log" taskset -c 0 "$server"
pid=$server_pid tcp=$server_tcp http=$server_http
trap 'kill $pid ${fleet:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
taskset -c 1 "$bench" fleet --preset "$preset" --tcp-address "$tcp" --duration 3600s >"$tmp/fleet.log" 2>&1 &
fleet=$!
for _ in $(seq 1200); do grep -q "registered in" "$tmp/fleet.log" && break; sleep 0.5; done
load=(--preset "$preset" --workers 64 --warmup 3s --duration 8s ${RATE:+--rate "$RATE"})
for r in $(seq "$rounds"); do
    taskset -c 1 "$bench" ceiling "${load[@]}" --ceiling-cpus 0 --json "$tmp/c.json" >/dev/null 2>&1
    taskset -c 1 "$bench" consumers "${load[@]}" --http-address "$http" --server-pid "$pid" --json "$tmp/s.json" >/dev/null 2>&1
    python3 - "$tmp/c.json" "$tmp/s.json" "$preset" "$r" "$tmp/rounds.jsonl" <<'PY'
import json, sys
def load(path, key):
    r = json.load(open(path))[key]
    p = r["server"]
    sys_share = p["system_s"] / p["cpu_s"] if p["cpu_s"] else 0.0
    us = p["cores"] * 1e6 / r["per_second"]
    return r, {"user_us": us * (1 - sys_share), "system_us": us * sys_share}
c, ccpu = load(sys.argv[1], "ceiling")
s, scpu = load(sys.argv[2], "lookups")
ratio = s["per_second"] / c["per_second"]
cpu = lambda x: f"{x['user_us']:.2f} + {x['system_us']:.2f} us"
tail = lambda r: " / ".join(f"{r['latency'][k] / 1000:.2f}" for k in ("p50_us", "p99_us", "p999_us"))
print(f"{sys.argv[3]} round {sys.argv[4]}: ceiling {c['per_second']:,.0f} req/s, "
      f"server {s['per_second']:,.0f} req/s = {ratio:.1%}"
      f"; CPU per request (user + system): ceiling {cpu(ccpu)}, server {cpu(scpu)}"
      + (f"; p50 / p99 / p99.9: ceiling {tail(c)} ms, server {tail(s)} ms" if s.get("rate") else ""))
keep = ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")
with open(sys.argv[5], "a") as f:
    f.write(json.dumps({
        "ceiling_per_second": c["per_second"], "server_per_second": s["per_second"],
        "ratio": ratio, "server_errors": sum((s.get("errors") or {}).values()),
        "ceiling_cpu_per_request": ccpu, "server_cpu_per_request": scpu,
        "rate": s.get("rate") or None,
        "ceiling_latency": {k: c["latency"][k] for k in keep},
        "server_latency": {k: s["latency"][k] for k in keep},
        "ceiling_unsent": c.get("unsent", 0), "server_unsent": s.get("unsent", 0),
    }) + "\n")
PY
done
if [ -n "$json_out" ]; then
    python3 - "$tmp/rounds.jsonl" "$preset" "$json_out" <<'PY'
import json, statistics, sys
rounds = [json.loads(l) for l in open(sys.argv[1])]
summary = {"preset": sys.argv[2], "rounds": rounds}
if rounds[0]["rate"]:
    # Open loop: the rates are the same by construction; what differs is
    # the tail, judged against target 2 (p99 < 1 ms, p99.9 < 5 ms).
    def met(who):
        return sum(r[who + "_latency"]["p99_us"] < 1000 and r[who + "_latency"]["p999_us"] < 5000
                   and r[who + "_unsent"] == 0 for r in rounds)
    for who in ("ceiling", "server"):
        summary[who + "_rounds_meeting_target_2"] = met(who)
        summary[who + "_median_p99_us"] = statistics.median(r[who + "_latency"]["p99_us"] for r in rounds)
        summary[who + "_median_p999_us"] = statistics.median(r[who + "_latency"]["p999_us"] for r in rounds)
    print(f"{sys.argv[2]} at {rounds[0]['rate']:,.0f}/s, rounds with p99 < 1 ms and p99.9 < 5 ms: "
          f"ceiling {met('ceiling')} of {len(rounds)}, server {met('server')} of {len(rounds)}")
else:
    summary["median_ratio"] = statistics.median(r["ratio"] for r in rounds)
    print(f"{sys.argv[2]}: median of {len(rounds)} rounds {summary['median_ratio']:.1%}")
json.dump(summary, open(sys.argv[3], "w"), indent=2)
PY
fi
