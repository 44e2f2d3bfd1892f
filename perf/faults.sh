#!/usr/bin/env bash
# Faults under load (issue 16 point 2): each scenario starts a fresh release
# server, registers a fleet that keeps pinging and churning, runs consumers
# open loop, applies one fault and checks what must hold.
#
#   perf/faults.sh [SCENARIO...]     (default: sigterm kill9 slow-reader abandoned burst)
#
# Server pinned to core 0 (taskset -c 0), load (bench, disturb.py) on core 1.
# One line per scenario with the figures and PASS/FAIL, every output under
# OUT (default perf/results/faults), the summary in SUMMARY (default
# OUT/summary.json). Exit status 1 if any scenario FAILed, 2 on a usage error.
#
# Environment: PRESET (soak), RATE (consumer requests/s, open loop, 5000),
# WORKERS (32), PACER_SPIN (the consumers' --pacer-spin; unset: 0s for
# burst, whose client needs all of core 1 to open its connections (with the
# pacer spinning it got half and took 3.1-4.6 s), 2ms, the bench's default,
# for the others, whose clients need no CPU while measured: with the pacer
# sleeping, slow-reader's ratio went x1.16-x16.9 over four runs of one
# build, spinning x0.81-x1.09 over three), LOAD_S (seconds of each consumers run, 10), CHURN (0.02),
# KILL9_CHURN (0: converge and the answer check need a stable fleet; the
# fleet still reconnects after the kill),
# KILL9_LIMIT_S (every topic right within this long of the kill; default
# 1.25 x the cold registration of the same fleet, measured in the same
# scenario, + 1 s: a restart no slower than the first start, whose time is
# the fleet's one-command-at-a-time registration), RATIO_LIMIT (2), NSQD_LIMIT_MS (100),
# SLOW_CONNS (10), SLOW_PATH (/nodes), ABANDONED_CONNS (1000),
# BURST_CONNS (20000), BURST_OVER_S (1), DISTURB_CPUS (1: core of
# disturb.py's faults; its nsqd probe always runs SCHED_FIFO on core 1),
# DISTURB_SCHED (normal, or idle: the faults SCHED_IDLE, e.g. with
# DISTURB_CPUS=0 so that they only use the server core's idle time),
# SERVER_ARGS (more server options, word-split, e.g.
# --max-http-accept-rate=5000), SERVER_BIN / BENCH_BIN (prebuilt binaries; else
# ${CARGO_TARGET_DIR:-target}/release, built when missing). Waits while
# /work/PERF_QUIET exists (QUIET_FILE), before each scenario.
set -uo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh

all=(sigterm kill9 slow-reader abandoned burst)
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=("${all[@]}")
for s in "${scenarios[@]}"; do
    case " ${all[*]} " in *" $s "*) ;; *) echo "faults.sh: unknown scenario $s (one of: ${all[*]})" >&2; exit 2 ;; esac
done

PRESET=${PRESET:-soak}
RATE=${RATE:-5000}
WORKERS=${WORKERS:-32}
PACER_SPIN=${PACER_SPIN:-}
# The consumers' --pacer-spin in scenario NAME (see PACER_SPIN above).
spin_for() {
    if [ -n "$PACER_SPIN" ]; then echo "$PACER_SPIN"
    elif [ "$1" = burst ]; then echo 0s
    else echo 2ms
    fi
}
LOAD_S=${LOAD_S:-10}
CHURN=${CHURN:-0.02}
KILL9_CHURN=${KILL9_CHURN:-0}
KILL9_LIMIT_S=${KILL9_LIMIT_S:-}
RATIO_LIMIT=${RATIO_LIMIT:-2}
NSQD_LIMIT_MS=${NSQD_LIMIT_MS:-100}
SLOW_CONNS=${SLOW_CONNS:-10}
SLOW_PATH=${SLOW_PATH:-/nodes}
ABANDONED_CONNS=${ABANDONED_CONNS:-1000}
BURST_CONNS=${BURST_CONNS:-20000}
BURST_OVER_S=${BURST_OVER_S:-1}
DISTURB_CPUS=${DISTURB_CPUS:-1}
DISTURB_SCHED=${DISTURB_SCHED:-normal}
QUIET_FILE=${QUIET_FILE:-/work/PERF_QUIET}
OUT=${OUT:-perf/results/faults}
SUMMARY=${SUMMARY:-$OUT/summary.json}
mkdir -p "$OUT"

wait_quiet() {
    if [ -e "$QUIET_FILE" ]; then
        echo "== $QUIET_FILE exists: waiting" >&2
        while [ -e "$QUIET_FILE" ]; do sleep 20; done
    fi
}

target=${CARGO_TARGET_DIR:-target}
server=${SERVER_BIN:-$target/release/nsqlookupd}
bench=${BENCH_BIN:-$target/release/nsqlookupd-bench}
if [ ! -x "$server" ] || [ ! -x "$bench" ]; then
    wait_quiet
    cargo build --release --bin nsqlookupd --bin nsqlookupd-bench || exit 2
fi
commit=$("$server" --version | grep -o 'commit [0-9a-f]*[-a-z]*' | awk '{print $2}')
disturb=(python3 perf/disturb.py)
workload=(--preset "$PRESET")

# JSON field of a file: jget FILE EXPR (python expression on `j`).
jget() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print("" if v is None else v)' "$1" "$2" 2>/dev/null
}
now() { date +%s.%N; }
# Ephemeral port of HOST:PORT refuses connections?
refused() {
    local host=${1%:*} port=${1##*:}
    ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

results=()    # one JSON object per scenario
failed=0

# Records a scenario: record NAME PASS|FAIL "text line" JSON-OBJECT
record() {
    local name=$1 verdict=$2 line=$3 obj=$4
    printf '%-12s %s  %s\n' "$name" "$verdict" "$line"
    results+=("$(python3 -c 'import json,sys; o=json.loads(sys.argv[3]); o["scenario"]=sys.argv[1]; o["verdict"]=sys.argv[2]; o["line"]=sys.argv[4]; print(json.dumps(o))' "$name" "$verdict" "$obj" "$line")")
    [ "$verdict" = PASS ] || failed=1
}

# Starts a fresh server and the fleet; waits until the fleet is registered.
# Sets pid tcp http fleet_pid.
setup() {
    local name=$1
    log=$OUT/$name.server.log
    # shellcheck disable=SC2086
    start_server "$log" taskset -c 0 "$server" ${SERVER_ARGS:-}
    pid=$server_pid tcp=$server_tcp http=$server_http
    if [ -z "$http" ]; then
        echo "$name: the server did not start (see $log)" >&2
        return 1
    fi
    local churn=$CHURN
    [ "$name" = kill9 ] && churn=$KILL9_CHURN
    taskset -c 1 "$bench" fleet "${workload[@]}" --tcp-address "$tcp" --window 1 \
        --churn "$churn" --duration 3600s --json "$OUT/$name.fleet.json" \
        >"$OUT/$name.fleet.txt" 2>&1 &
    fleet_pid=$!
    # Registered: every topic answered right once (converge at rest).
    taskset -c 1 "$bench" converge "${workload[@]}" --http-address "$http" \
        --converge-timeout 120s --json "$OUT/$name.registered.json" \
        >"$OUT/$name.registered.txt" 2>&1 ||
        echo "$name: the fleet did not register in 120 s" >&2
}

teardown() {
    [ -n "${fleet_pid:-}" ] && kill -TERM "$fleet_pid" 2>/dev/null
    [ -n "${fleet_pid:-}" ] && wait "$fleet_pid" 2>/dev/null
    fleet_pid=
    if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null
    fi
    pid=
}
trap 'teardown; exit 130' INT TERM

# load OUT DURATION [extra options]: one open-loop consumers run on core 1,
# its figures in OUT.json and OUT.txt (OUT's first word is the scenario).
load() {
    local out=$1 duration=$2 name
    shift 2
    name=$(basename "$out")
    taskset -c 1 "$bench" consumers "${workload[@]}" --http-address "$http" \
        --workers "$WORKERS" --rate "$RATE" --duration "$duration" --pacer-spin "$(spin_for "${name%%.*}")" \
        --json "$out.json" "$@" >"$out.txt" 2>&1
}

# consumers OUT [extra options]: LOAD_S seconds of it, the server sampled.
consumers() {
    local out=$1
    shift
    load "$out" "${LOAD_S}s" --server-pid "$pid" "$@"
}

# ------------------------------------------------------------------ sigterm
scenario_sigterm() {
    setup sigterm || { record sigterm FAIL "server did not start" '{}'; return; }
    local o=$OUT/sigterm
    # No --server-pid: the server exits during it.
    load "$o.consumers" 6s &
    local cpid=$!
    sleep 3
    local sockets
    sockets=$(find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null | wc -l)
    local t0 t1 rc
    t0=$(now)
    kill -TERM "$pid"
    wait "$pid"
    rc=$?
    t1=$(now)
    pid=
    local exit_s
    exit_s=$(python3 -c "print(round($t1 - $t0, 3))")
    local tcp_closed=no http_closed=no
    refused "$tcp" && tcp_closed=yes
    refused "$http" && http_closed=yes
    # No socket of the server's ports left established on the server side.
    local tport=${tcp##*:} hport=${http##*:} left
    left=$(ss -Htn state established "( sport = :$tport or sport = :$hport )" | wc -l)
    sleep 1
    kill -TERM "$fleet_pid" 2>/dev/null
    wait "$fleet_pid"
    fleet_pid=
    wait "$cpid"
    local panics errors unfinished
    panics=$(grep -ci 'panic' "$log")
    errors=$(grep -cE '(ERROR|FATAL): ' "$log")
    unfinished=$(grep -o 'shutdown: [0-9]* connections did not finish in time' "$log" | awk '{print $2}')
    local fleet_errs fleet_sessions nodes cons_errs
    fleet_errs=$(jget "$OUT/sigterm.fleet.json" 'sum(j["tcp_errors"].values())')
    fleet_sessions=$(jget "$OUT/sigterm.fleet.json" 'j["steady"]["sessions"]')
    nodes=$(jget "$OUT/sigterm.fleet.json" 'j["workload"]["nodes"]')
    cons_errs=$(jget "$o.consumers.json" 'j["lookups"]["errors"]')
    local verdict=PASS why=()
    [ "$rc" = 0 ] || why+=("exit status $rc")
    python3 -c "import sys; sys.exit(0 if $exit_s <= 1.0 else 1)" || why+=("exit took ${exit_s}s")
    [ "$panics" = 0 ] || why+=("$panics panic lines")
    [ "$errors" = 0 ] || why+=("$errors ERROR/FATAL lines")
    [ "$tcp_closed" = yes ] && [ "$http_closed" = yes ] || why+=("a port still accepts")
    [ "$left" = 0 ] || why+=("$left server sockets still established")
    [ "${fleet_errs:-0}" -gt 0 ] || why+=("the fleet saw no connection closed")
    [ ${#why[@]} -eq 0 ] || verdict=FAIL
    local line="exit $rc in ${exit_s}s (limit 1 s) with $sockets sockets open; panic lines $panics, ERROR/FATAL lines $errors; ports refused: tcp $tcp_closed, http $http_closed; established left $left; connections not finished in time: ${unfinished:-0}; fleet: $fleet_errs TCP errors, $fleet_sessions sessions for $nodes nodes; consumers errors $cons_errs"
    [ ${#why[@]} -eq 0 ] || line="$line; FAIL: ${why[*]}"
    record sigterm "$verdict" "$line" "$(python3 -c 'import json,sys; a=sys.argv; print(json.dumps({"exit_status":int(a[1]),"exit_s":float(a[2]),"sockets_open":int(a[3]),"panic_lines":int(a[4]),"error_lines":int(a[5]),"tcp_refused":a[6]=="yes","http_refused":a[7]=="yes","established_left":int(a[8]),"unfinished_connections":int(a[9] or 0),"fleet_tcp_errors":int(a[10] or 0),"fleet_sessions":int(a[11] or 0)}))' "$rc" "$exit_s" "$sockets" "$panics" "$errors" "$tcp_closed" "$http_closed" "$left" "${unfinished:-0}" "${fleet_errs:-0}" "${fleet_sessions:-0}")"
}

# ------------------------------------------------------------------ kill9
scenario_kill9() {
    setup kill9 || { record kill9 FAIL "server did not start" '{}'; return; }
    local o=$OUT/kill9
    # Load while it dies and comes back (errors expected while it is down).
    load "$o.during" 6s &
    local cpid=$!
    sleep 2
    local old_pid=$pid t_kill
    t_kill=$(now)
    kill -9 "$old_pid"
    wait "$old_pid" 2>/dev/null
    # The convergence clock starts at the kill: converge waits for the
    # server to answer at all (http_up_s), then for every topic.
    taskset -c 1 "$bench" converge "${workload[@]}" --http-address "$http" \
        --converge-timeout 60s --json "$o.converge.json" >"$o.converge.txt" 2>&1 &
    local vpid=$!
    start_server_at "$OUT/kill9.restart.log" "$tcp" "$http" taskset -c 0 "$server" ${SERVER_ARGS:-}
    pid=$server_pid
    log=$OUT/kill9.restart.log
    local t_up restarted=yes
    t_up=$(now)
    [ "$server_http" = "$http" ] || restarted=no
    wait "$vpid"
    local vrc=$?
    wait "$cpid"
    local up_s conv_s conv_from_up
    up_s=$(jget "$o.converge.json" 'round(j["converge"]["http_up_s"],3)')
    conv_s=$(jget "$o.converge.json" 'round(j["converge"]["converged_s"],3)')
    conv_from_up=$(python3 -c "print(round(${conv_s:-999} - ${up_s:-0}, 3))")
    # Lookups answer correctly now.
    consumers "$o.after" --check-sample 0.05
    local arc=$?
    local ok errs checked cfail p99
    ok=$(jget "$o.after.json" 'j["lookups"]["requests_ok"]')
    errs=$(jget "$o.after.json" 'sum(j["lookups"]["errors"].values())')
    checked=$(jget "$o.after.json" 'j["checks"]["sampled"]')
    cfail=$(jget "$o.after.json" 'j["checks"]["sampled_failed"]')
    p99=$(jget "$o.after.json" 'j["lookups"]["latency"]["p99_us"]/1000')
    local panics
    panics=$(grep -ci 'panic' "$log")
    teardown
    local sess cold
    sess=$(jget "$OUT/kill9.fleet.json" 'j["steady"]["sessions"]')
    cold=$(jget "$OUT/kill9.registered.json" 'round(j["converge"]["converged_s"],3)')
    local limit=$KILL9_LIMIT_S
    [ -n "$limit" ] || limit=$(python3 -c "print(round(${cold:-0} * 1.25 + 1, 3))")
    local verdict=PASS why=()
    [ "$restarted" = yes ] || why+=("restart on the same ports failed")
    [ "$vrc" = 0 ] && [ -n "$conv_s" ] || why+=("did not converge")
    python3 -c "import sys; sys.exit(0 if ${conv_s:-999} <= $limit else 1)" || why+=("converged after ${conv_s:-never}s > ${limit}s")
    [ "$arc" = 0 ] && [ "${errs:-1}" = 0 ] && [ "${cfail:-1}" = 0 ] && [ "${ok:-0}" -gt 0 ] || why+=("lookups after: $errs errors, $cfail of $checked wrong")
    [ ${#why[@]} -eq 0 ] || verdict=FAIL
    local line="restart on the same ports: $restarted; HTTP up ${up_s}s after the kill, every topic right ${conv_s}s after the kill (${conv_from_up}s after HTTP up; limit ${limit}s; the cold registration of the same fleet took ${cold}s); then $ok lookups at $RATE/s: $errs errors, $checked checked, $cfail wrong, p99 ${p99} ms; fleet sessions $sess"
    [ ${#why[@]} -eq 0 ] || line="$line; FAIL: ${why[*]}"
    record kill9 "$verdict" "$line" "$(python3 -c 'import json,sys; a=sys.argv; f=lambda x: float(x) if x else None; print(json.dumps({"restarted_same_ports":a[1]=="yes","http_up_s":f(a[2]),"converged_s":f(a[3]),"converged_after_up_s":f(a[4]),"limit_s":float(a[5]),"after_requests_ok":int(a[6] or 0),"after_errors":int(a[7] or 0),"after_checked":int(a[8] or 0),"after_wrong":int(a[9] or 0),"after_p99_ms":f(a[10]),"cold_registration_s":f(a[11])}))' "$restarted" "$up_s" "$conv_s" "$conv_from_up" "$limit" "$ok" "$errs" "$checked" "$cfail" "$p99" "$cold")"
}

# ------------------------------------------------------------------ disturbances
# disturbed NAME DISTURB-ARGS...: undisturbed run, then the same run with the
# disturbance in place; the nsqd probe runs through both.
disturbed() {
    local name=$1
    shift
    setup "$name" || { record "$name" FAIL "server did not start" '{}'; return; }
    local o=$OUT/$name
    # Undisturbed.
    chrt -f 10 taskset -c 1 "${disturb[@]}" probe --tcp "$tcp" --json "$o.probe-base.json" >/dev/null &
    local ppid=$!
    consumers "$o.base"
    kill -TERM "$ppid"; wait "$ppid"
    # Disturbed: the fault in place first (burst: after a delay, inside the run).
    rm -f "$o.ready"
    local rss0
    rss0=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
    local dargs=("$@")
    case $name in
        slow-reader) dargs+=(--hold "$((LOAD_S + 1))" --server-pid "$pid") ;;
        abandoned) dargs+=(--hold "$((LOAD_S + 1))") ;;
        burst) dargs+=(--delay 3) ;;
    esac
    local dsched=()
    [ "$DISTURB_SCHED" = idle ] && dsched=(chrt -i 0)
    "${dsched[@]}" taskset -c "$DISTURB_CPUS" "${disturb[@]}" "${dargs[@]}" --http "$http" \
        --ready-file "$o.ready" --json "$o.disturb.json" >/dev/null 2>"$o.disturb.err" &
    local dpid=$!
    for _ in $(seq 300); do [ -e "$o.ready" ] && break; sleep 0.1; done
    chrt -f 10 taskset -c 1 "${disturb[@]}" probe --tcp "$tcp" --json "$o.probe.json" >/dev/null &
    ppid=$!
    consumers "$o.disturbed"
    kill -TERM "$ppid"; wait "$ppid"
    wait "$dpid"
    local rss1
    rss1=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
    local panics errors
    panics=$(grep -ci 'panic' "$log")
    errors=$(grep -cE '(ERROR|FATAL): ' "$log")
    local max_http
    max_http=$(grep -c 'max-http-connections\|connections refused' "$log")
    teardown
    local b99 d99 ratio pmax pbase derrs berrs
    b99=$(jget "$o.base.json" 'j["lookups"]["latency"]["p99_us"]/1000')
    d99=$(jget "$o.disturbed.json" 'j["lookups"]["latency"]["p99_us"]/1000')
    ratio=$(python3 -c "print(round(${d99:-0} / max(${b99:-0}, 1e-3), 2))")
    pbase=$(jget "$o.probe-base.json" 'j["answers"]["max_ms"]')
    pmax=$(jget "$o.probe.json" 'j["answers"]["max_ms"]')
    berrs=$(jget "$o.base.json" 'sum(j["lookups"]["errors"].values())')
    derrs=$(jget "$o.disturbed.json" 'sum(j["lookups"]["errors"].values())')
    local perrs
    perrs=$(jget "$o.probe.json" 'sum(j["errors"].values())')
    local fmax
    fmax=$(jget "$OUT/$name.fleet.json" 'j["steady"]["tcp_latency"]["max_us"]/1000')
    local detail
    case $name in
        slow-reader)
            detail=$(jget "$o.disturb.json" '"%d connections took %d pipelined %s requests (%d B); server RSS %s KiB before, peak %s, end of hold %s, after close %s" % (j["connections"], j["requests_taken"], j["path"], j["request_bytes_taken"], j["server_rss_kib_before"], j["server_rss_kib_peak"], j["server_rss_kib_end_of_hold"], j["server_rss_kib_after_close"])') ;;
        abandoned)
            detail=$(jget "$o.disturb.json" '"%d of %d connections opened in %.2fs, held %.1fs, %d closed by the server meanwhile, errors %s" % (j["opened"], j["connections"], j["opened_in_s"], j["held_s"], j["closed_by_server_during_hold"], j["errors"])') ;;
        burst)
            detail=$(jget "$o.disturb.json" '"%d connections opened in %ss (all answered in %ss), %d answered 200, errors %s, most at once %d, connect p99 %s ms max %s ms, answer p99 %s ms max %s ms" % (j["connections"], j["opened_all_in_s"], j["finished_in_s"], j["answered_200"], j["errors"], j["concurrent_max"], j["connect"].get("p99_ms"), j["connect"].get("max_ms"), j["answer"].get("p99_ms"), j["answer"].get("max_ms"))') ;;
    esac
    local verdict=PASS why=()
    python3 -c "import sys; sys.exit(0 if ${ratio:-99} <= $RATIO_LIMIT else 1)" || why+=("p99 ratio ${ratio} > ${RATIO_LIMIT}")
    python3 -c "import sys; sys.exit(0 if ${pmax:-9999} < $NSQD_LIMIT_MS else 1)" || why+=("nsqd answer ${pmax} ms >= ${NSQD_LIMIT_MS} ms")
    [ "${perrs:-1}" = 0 ] || why+=("probe errors $perrs")
    [ "$panics" = 0 ] || why+=("$panics panic lines")
    if [ "$name" = burst ]; then
        python3 -c "import sys; v='$(jget "$o.disturb.json" 'j["opened_all_in_s"]')'; sys.exit(0 if v and float(v) <= $BURST_OVER_S * 1.05 else 1)" ||
            why+=("the burst was not opened within ${BURST_OVER_S}s")
    fi
    [ ${#why[@]} -eq 0 ] || verdict=FAIL
    local line="p99 ${b99} -> ${d99} ms (x${ratio}, limit x${RATIO_LIMIT}) at $RATE/s; consumer errors $berrs -> $derrs; nsqd probe max ${pbase} -> ${pmax} ms (limit ${NSQD_LIMIT_MS} ms, probe errors ${perrs}); fleet steady TCP max ${fmax} ms; server RSS ${rss0} -> ${rss1} KiB; log: $errors ERROR/FATAL, $panics panic, $max_http connection-cap lines; $detail"
    [ ${#why[@]} -eq 0 ] || line="$line; FAIL: ${why[*]}"
    record "$name" "$verdict" "$line" "$(python3 -c 'import json,sys; a=sys.argv; f=lambda x: float(x) if x else None; import os; d=json.load(open(a[11])) if os.path.exists(a[11]) else None; print(json.dumps({"rate":float(a[1]),"p99_base_ms":f(a[2]),"p99_disturbed_ms":f(a[3]),"ratio":f(a[4]),"probe_max_base_ms":f(a[5]),"probe_max_ms":f(a[6]),"consumer_errors_base":int(a[7] or 0),"consumer_errors_disturbed":int(a[8] or 0),"server_rss_kib_before":int(a[9] or 0),"server_rss_kib_after":int(a[10] or 0),"disturb":d}))' "$RATE" "$b99" "$d99" "$ratio" "$pbase" "$pmax" "$berrs" "$derrs" "$rss0" "$rss1" "$o.disturb.json")"
}

scenario_slow-reader() { disturbed slow-reader slow-reader --connections "$SLOW_CONNS" --path "$SLOW_PATH"; }
scenario_abandoned() { disturbed abandoned abandoned --connections "$ABANDONED_CONNS"; }
scenario_burst() { disturbed burst burst --connections "$BURST_CONNS" --over "$BURST_OVER_S"; }

echo "== faults: server $server (commit $commit), preset $PRESET, consumers $RATE/s x ${LOAD_S}s, $WORKERS workers, churn $CHURN; faults on core $DISTURB_CPUS ($DISTURB_SCHED); ulimit -n here $(ulimit -n) (disturb.py raises its own); outputs in $OUT"
for s in "${scenarios[@]}"; do
    wait_quiet
    "scenario_$s"
done

printf '%s\n' "${results[@]}" | python3 -c '
import json, sys, time
rows = [json.loads(l) for l in sys.stdin if l.strip()]
out = {"tool": "perf/faults.sh", "commit": sys.argv[1], "preset": sys.argv[2],
       "rate": float(sys.argv[3]), "load_s": float(sys.argv[4]),
       "finished_unix": int(time.time()),
       "passed": all(r["verdict"] == "PASS" for r in rows), "scenarios": rows}
json.dump(out, open(sys.argv[5], "w"), indent=1)
' "$commit" "$PRESET" "$RATE" "$LOAD_S" "$SUMMARY"
echo "== summary: $SUMMARY"
exit "$failed"
