#!/usr/bin/env bash
# Measures cluster mode on this machine, in one go, and prints a summary.
#
#   perf/cluster.sh [--preset PRESET] [OUT_DIR]     (default: medium, perf/results/cluster)
#
# Starts, all on 127.0.0.1 and on free ports: one etcd (Debian's
# /usr/bin/etcd, data dir in a temp dir), a standalone nsqlookupd (S) and
# two cluster replicas sharing that etcd (A and B), then:
#
#   (a) the preset's fleet registers on A (`fleet`, in the background for
#       the whole run), and the same fleet on S;
#   (b) `converge` on B, started with (a): the fleet fully visible on B
#       after it registered on A;
#   (c) `propagation` A -> B: probe nodes REGISTER on A, polled on B; and
#       the same on S alone (S -> S), the floor of the method;
#   (d) closed-loop /lookup `consumers` against B and against S, in
#       alternating rounds (ROUNDS, 3), 64 connections, 3 s warm-up + 8 s;
#   (e) kill -9 of B, B started again on its ports, and at once
#       `converge --wait-ready` on B: a restarted replica's time to answer
#       for the whole fleet;
#   (f) etcd's CPU seconds (/proc/PID/stat) per phase, its DB size (`du`
#       of the data dir and its own etcd_mvcc_db_total_size_in_bytes).
#
# Every bench output (text and JSON) goes to OUT_DIR, with the servers'
# and etcd's logs under OUT_DIR/logs, the replicas' /metrics at the end,
# and the summary in OUT_DIR/summary.txt and summary.json. Everything
# started is stopped on exit.
#
# Environment: SERVER_BIN, BENCH_BIN (prebuilt binaries; otherwise both
# are built with `cargo build --release`), ETCD_BIN (default etcd),
# SERVER_CPUS (servers' cores, default 0), ETCD_CPUS (default SERVER_CPUS),
# BENCH_CPUS (the bench's, default 1), ROUNDS (3), PROBES (200).
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh

preset=medium
out=
while [ $# -gt 0 ]; do
    case $1 in
    --preset) preset=${2:?--preset needs a value}; shift 2 ;;
    --preset=*) preset=${1#--preset=}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) out=$1; shift ;;
    esac
done
out=${out:-perf/results/cluster}
rounds=${ROUNDS:-3}
probes=${PROBES:-200}
server_cpus=${SERVER_CPUS:-0}
etcd_cpus=${ETCD_CPUS:-$server_cpus}
bench_cpus=${BENCH_CPUS:-1}
etcd_bin=${ETCD_BIN:-etcd}
mkdir -p "$out/logs"

if [ -z "${SERVER_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
    cargo build --release --bin nsqlookupd --bin nsqlookupd-bench
fi
server=${SERVER_BIN:-target/release/nsqlookupd}
bench=${BENCH_BIN:-target/release/nsqlookupd-bench}
command -v "$etcd_bin" >/dev/null || { echo "cluster.sh: no $etcd_bin (apt-get install etcd-server)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cpu_s() { # user + system CPU seconds of a process
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
    local limit=$1
    shift
    for _ in $(seq $((limit * 10))); do "$@" && return 0; sleep 0.1; done
    return 1
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/ready")" = 200 ]; }
registered() { grep -q 'registered in' "$1"; }
b_cmd() { taskset -c "$bench_cpus" "$bench" "$@"; }
run_bench() { # run_bench NAME ARGS...: NAME.txt, NAME.json; never aborts the script
    local name=$1 status=0
    shift
    echo "== $name: nsqlookupd-bench $*"
    b_cmd "$@" --json "$out/$name.json" >"$out/$name.txt" 2>&1 || status=$?
    grep -v '^nsqlookupd-bench: ' "$out/$name.txt" || true
    echo "== $name: exit $status"
}
etcd_cpu_mark() { echo "$1 $(cpu_s "$etcd_pid")" >>"$out/etcd-cpu.txt"; }

# etcd, alone, on free ports.
ec=$(free_port) ep=$(free_port)
etcd_url=http://127.0.0.1:$ec
taskset -c "$etcd_cpus" "$etcd_bin" --name bench --data-dir "$tmp/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "bench=http://127.0.0.1:$ep" >"$out/logs/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")
etcd_up() { curl -sf "$etcd_url/health" | grep -q true; }
wait_for 30 etcd_up || { echo "cluster.sh: etcd did not start (see $out/logs/etcd.log)" >&2; exit 2; }
: >"$out/etcd-cpu.txt"
etcd_cpu_mark started

# S standalone; A and B replicas (B on fixed ports, to restart it there).
start_server "$out/logs/standalone.log" taskset -c "$server_cpus" "$server"
s_pid=$server_pid s_tcp=$server_tcp s_http=$server_http
pids+=("$s_pid")
start_server "$out/logs/a.log" taskset -c "$server_cpus" "$server" --etcd-endpoints="$etcd_url"
a_pid=$server_pid a_tcp=$server_tcp a_http=$server_http
pids+=("$a_pid")
b_tcp=127.0.0.1:$(free_port) b_http=127.0.0.1:$(free_port)
start_b() { # start_b LOG: B in the background, on its ports
    taskset -c "$server_cpus" "$server" --etcd-endpoints="$etcd_url" \
        --tcp-address="$b_tcp" --http-address="$b_http" 2>"$1" &
    b_pid=$!
    pids+=("$b_pid")
}
start_b "$out/logs/b.log"
for who in "$a_http" "$b_http"; do
    wait_for 30 ready "$who" || { echo "cluster.sh: replica $who not ready" >&2; exit 2; }
done
[ -n "$s_http" ] || { echo "cluster.sh: the standalone server did not start" >&2; exit 2; }
echo "== etcd $etcd_url (pid $etcd_pid), standalone S $s_tcp/$s_http (pid $s_pid)," \
    "replica A $a_tcp/$a_http (pid $a_pid), replica B $b_tcp/$b_http (pid $b_pid); preset $preset"
etcd_cpu_mark servers-up

# (a) + (b): the fleet registers on A while B is watched converging.
# (started directly, not through a shell function, so that $! is the bench)
taskset -c "$bench_cpus" "$bench" fleet --preset "$preset" --tcp-address "$a_tcp" --duration 36000s \
    --verify-http "$b_http" --json "$out/fleet-a.json" >"$out/fleet-a.txt" 2>&1 &
fleet_a=$!
pids+=("$fleet_a")
run_bench converge-b converge --preset "$preset" --http-address "$b_http"
wait_for 600 registered "$out/fleet-a.txt" || { echo "cluster.sh: the fleet did not register on A" >&2; exit 1; }
grep 'registered in' "$out/fleet-a.txt"
etcd_cpu_mark fleet-registered

# The same fleet on S, for (d).
taskset -c "$bench_cpus" "$bench" fleet --preset "$preset" --tcp-address "$s_tcp" --duration 36000s >"$out/fleet-s.txt" 2>&1 &
fleet_s=$!
pids+=("$fleet_s")
wait_for 600 registered "$out/fleet-s.txt" || { echo "cluster.sh: the fleet did not register on S" >&2; exit 1; }

# (c) propagation A -> B.
etcd_cpu_mark propagation-start
run_bench propagation propagation --tcp-address "$a_tcp" --http-address "$b_http" --probes "$probes"
etcd_cpu_mark propagation-end
# The same on S alone: the floor of the method (poll interval, /lookup round trip).
run_bench propagation-floor propagation --tcp-address "$s_tcp" --http-address "$s_http" --probes "$probes"

# (d) /lookup on B next to S, alternating.
load=(--preset "$preset" --workers 64 --warmup 3s --duration 8s --check-sample 0.01)
for r in $(seq "$rounds"); do
    run_bench "lookup-b-$r" consumers "${load[@]}" --http-address "$b_http" --server-pid "$b_pid" --label "replica B"
    run_bench "lookup-s-$r" consumers "${load[@]}" --http-address "$s_http" --server-pid "$s_pid" --label standalone
done
etcd_cpu_mark lookups-end

# (e) B killed and started again; converge from the moment it starts.
kill -9 "$b_pid"
wait "$b_pid" 2>/dev/null || true
start_b "$out/logs/b-restarted.log"
run_bench converge-b-restart converge --preset "$preset" --http-address "$b_http" --wait-ready
etcd_cpu_mark restart-converged

# (f) etcd's figures, the replicas' metrics.
for d in "$tmp/etcd" "$tmp/etcd/member/snap/db" "$tmp/etcd/member/wal"; do du -sk "$d"; done >"$out/etcd-du-kib.txt" 2>/dev/null || true
curl -s "$etcd_url/metrics" >"$out/etcd-metrics.txt" || true
curl -s "http://$a_http/metrics" >"$out/metrics-a.txt" || true
curl -s "http://$b_http/metrics" >"$out/metrics-b.txt" || true

# The fleet on A ends with a check of B's answers at rest (after B's restart).
kill -TERM "$fleet_a" 2>/dev/null || true
for _ in $(seq 600); do kill -0 "$fleet_a" 2>/dev/null || break; sleep 0.1; done
kill -9 "$fleet_a" 2>/dev/null || true
wait "$fleet_a" 2>/dev/null && fleet_status=0 || fleet_status=$?
echo "== fleet on A: exit $fleet_status"
grep -E '^(checks|result|  !)' "$out/fleet-a.txt" || true
etcd_cpu_mark end

python3 - "$out" "$preset" "$rounds" <<'PY' | tee "$out/summary.txt"
import json, os, statistics, sys
out, preset, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return None
ms = lambda us: f"{us / 1000:.2f} ms"
sec = lambda s: "-" if s is None else (f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s")
rows, summary = [], {"preset": preset}
def row(what, value, key=None, raw=None):
    rows.append((what, value))
    if key:
        summary[key] = raw
fleet = load("fleet-a")
reg_s = None
if fleet and fleet.get("registration"):
    reg_s = fleet["registration"]["seconds"]
else:  # the fleet's JSON is written when it stops: fall back on its log
    for line in open(os.path.join(out, "fleet-a.txt")):
        if "registered in" in line:
            t = line.split("registered in ")[1].split()[0]
            reg_s = float(t[:-2]) / 1000 if t.endswith("ms") else float(t.rstrip("us")) / 1e6 if t.endswith("us") else float(t[:-1])
row("fleet registered on A", sec(reg_s), "registered_on_a_s", reg_s)
c = load("converge-b")
if c:
    cv = c["converge"]
    row("fleet fully visible on B (from the fleet's start)", sec(cv["converged_s"]) + ("" if c["passed"] else " (FAIL)"),
        "visible_on_b_s", cv["converged_s"])
    if reg_s is not None and cv["converged_s"] is not None:
        row("  of which after the registration on A ended", sec(max(0.0, cv["converged_s"] - reg_s)),
            "visible_on_b_after_registered_s", cv["converged_s"] - reg_s)
for name, a, b, what in (("propagation", "A", "B", "propagation"), ("propagation-floor", "S", "S", "  floor, on S alone:")):
    p = load(name)
    if not p:
        continue
    pr = p["propagation"]
    for key, label in (("register", f"REGISTER on {a} -> listed on {b}"), ("unregister", f"UNREGISTER on {a} -> gone from {b}")):
        l = pr.get(key)
        if l:
            missed = pr[key + "_missed"]
            row(f"{what} {label} (p50 / p99 / max)",
                f"{ms(l['p50_us'])} / {ms(l['p99_us'])} / {ms(l['max_us'])}, {l['count']} probes, {missed} missed",
                name.replace("-", "_") + "_" + key,
                {k: l[k] for k in ("count", "p50_us", "p99_us", "max_us")} | {"missed": missed})
rates = {}
for who in ("b", "s"):
    rates[who] = []
    for r in range(1, rounds + 1):
        j = load(f"lookup-{who}-{r}")
        if j and j.get("lookups"):
            rates[who].append((j["lookups"]["per_second"], j["lookups"]["latency"]["p99_us"], j["passed"]))
for who, label in (("b", "replica B"), ("s", "standalone S")):
    if rates[who]:
        row(f"/lookup closed loop, {label} (req/s per round; p99)",
            ", ".join(f"{x:,.0f}{'' if ok else ' FAIL'}" for x, _, ok in rates[who])
            + f"; p99 {', '.join(ms(p) for _, p, _ in rates[who])}",
            "lookup_" + who, [x for x, _, _ in rates[who]])
if rates["b"] and rates["s"] and len(rates["b"]) == len(rates["s"]):
    ratios = [b[0] / s[0] for b, s in zip(rates["b"], rates["s"]) if s[0]]
    if ratios:
        row("  replica / standalone (median of rounds)", f"{statistics.median(ratios):.1%}",
            "lookup_ratio_median", statistics.median(ratios))
c = load("converge-b-restart")
if c:
    cv = c["converge"]
    row("restarted B: HTTP up / /ready 200 / whole fleet right",
        f"{sec(cv['http_up_s'])} / {sec(cv['ready_s'])} / {sec(cv['converged_s'])}" + ("" if c["passed"] else " (FAIL)"),
        "restart", {k: cv[k] for k in ("http_up_s", "ready_s", "converged_s")})
if fleet:
    ch = fleet["checks"]
    row("restarted B at rest, at the end (the fleet's own check)",
        f"{ch['final_checked']} topics checked, {ch['final_failed']} wrong" + ("" if fleet["passed"] else " (FAIL)"),
        "final_check_on_b", {"checked": ch["final_checked"], "failed": ch["final_failed"]})
marks = [l.split() for l in open(os.path.join(out, "etcd-cpu.txt")) if l.strip()]
cpu = {name: float(v) for name, v in marks}
def delta(a, b):
    return cpu[b] - cpu[a] if a in cpu and b in cpu else None
phases = [("registration + convergence on B", "servers-up", "fleet-registered"),
          ("propagation probes", "propagation-start", "propagation-end"),
          ("restart of B + convergence", "lookups-end", "restart-converged")]
total = delta("started", "end")
row("etcd CPU, whole run", f"{total:.2f} s" if total is not None else "-", "etcd_cpu_s", total)
for label, a, b in phases:
    d = delta(a, b)
    row(f"  during {label}", f"{d:.2f} s" if d is not None else "-", "etcd_cpu_" + a, d)
du = {}
for line in open(os.path.join(out, "etcd-du-kib.txt")):
    kib, path = line.split(None, 1)
    du[os.path.basename(path.strip())] = int(kib)
du_kib = du.get("etcd")
metrics = {}
for line in open(os.path.join(out, "etcd-metrics.txt")):
    if line and not line.startswith("#"):
        parts = line.split()
        if len(parts) == 2:
            metrics[parts[0]] = float(parts[1])
db = metrics.get("etcd_mvcc_db_total_size_in_bytes")
in_use = metrics.get("etcd_mvcc_db_total_size_in_use_in_bytes")
keys = metrics.get("etcd_debugging_mvcc_keys_total")
mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
row("etcd data dir (du; of which db, wal)", f"{mib(du_kib)} ({mib(du.get('db'))}, {mib(du.get('wal'))})",
    "etcd_du_kib", du)
row("etcd_mvcc_db_total_size_in_bytes (in use)",
    ("-" if db is None else f"{db / 2**20:.1f} MiB") + ("" if in_use is None else f" ({in_use / 2**20:.1f} MiB)")
    + ("" if keys is None else f", {keys:,.0f} keys"), "etcd_db_bytes", db)
width = max(len(w) for w, _ in rows)
print(f"== cluster mode, preset {preset}")
for what, value in rows:
    print(f"  {what:<{width}}  {value}")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
