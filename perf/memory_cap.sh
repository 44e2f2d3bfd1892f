#!/usr/bin/env bash
# The memory-limit run of issue 16 (point 2): a release server with
# --max-registrations=CAP, inside a memory limit sized for that cap, is
# offered a fleet twice as large and survives: it keeps answering /ping and
# /lookup for what it registered, its RSS stays below the limit, and the
# refusals are counted.
#
# The limit is a cgroup memory limit (memory.limit_in_bytes of a v1 memory
# cgroup, or memory.max of v2), made as a child of this shell's own cgroup
# and removed at the end; it counts what the kernel would OOM-kill for
# (resident memory and page cache), not address space. `prlimit --as` is
# not used: tokio's threads and glibc's malloc arenas reserve far more
# virtual memory than they touch (64 MiB of address space per arena), so an
# address-space limit sized for the resident set kills a healthy server. It
# also needs root (or a delegated cgroup); without one it stops.
#
# The 2x fleet is two `nsqlookupd-bench fleet` runs with different topic
# prefixes: fleet A (about 95 % of the cap) registers completely first, then
# fleet B offers as much again while A stays connected. B's nodes are
# refused (E_REGISTRATION_LIMIT); the bench, stricter than nsqd (which reads
# a REGISTER's answer and ignores it), counts that as an error and
# reconnects the node, so B keeps offering registrations for its whole run.
#
#   bash perf/memory_cap.sh                    # defaults below
#   CAP=4000000 NODES=50 TOPICS=16000 bash perf/memory_cap.sh
#   CONTROL=1 bash perf/memory_cap.sh          # also: the same without the cap, to see it killed
#
# Environment: CAP (--max-registrations), NODES, TOPICS (per node),
# CHANNELS (per topic), LIMIT_MIB (the memory limit; default: the RSS the
# cap is measured to need, from BYTES_PER_REG, plus a margin), B_SECONDS
# (how long fleet B offers its registrations).
set -euo pipefail
cd "$(dirname "$0")/.."

CAP=${CAP:-2000000}
NODES=${NODES:-40}
CHANNELS=${CHANNELS:-4}
# Fleet A: NODES x TOPICS x (1 + CHANNELS) + NODES client pairs <= 95 % of CAP.
TOPICS=${TOPICS:-$(( CAP * 95 / 100 / NODES / (1 + CHANNELS) ))}
B_SECONDS=${B_SECONDS:-30}
# Measured here (2026-12-02): fleet A's 1,900,040 pairs took the RSS from
# 6.9 to 67.5 MiB, 33.4 bytes a pair (this workload: 40 producers a key).
BYTES_PER_REG=${BYTES_PER_REG:-34}
BASE_MIB=${BASE_MIB:-8}              # the server with nothing registered (6.9 MiB)
# The limit: what the cap is measured to need, plus 25 %; a fleet twice
# the cap needs about twice that (the uncapped control: 150 MiB).
LIMIT_MIB=${LIMIT_MIB:-$(( BASE_MIB + ${CACHE_MIB:-16} + CAP * BYTES_PER_REG / 1048576 * 5 / 4 ))}
CONTROL=${CONTROL:-0}
# The rendered answers are bounded by --lookup-cache-size, not by the caps:
# kept small here (and inside the limit) so that the run measures the registry.
CACHE_MIB=${CACHE_MIB:-16}

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --bins --quiet
SERVER=$CARGO_TARGET_DIR/release/nsqlookupd
BENCH=$CARGO_TARGET_DIR/release/nsqlookupd-bench
WORK=$(mktemp -d /tmp/memory_cap.XXXXXX)

# The cgroup: a child of our own memory cgroup.
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    CG=/sys/fs/cgroup$(awk -F: '$1=="0"{print $3}' /proc/self/cgroup)/nsqlookupd-memcap-$$
    mkdir "$CG"
    echo $(( LIMIT_MIB * 1048576 )) > "$CG/memory.max"
    echo 0 > "$CG/memory.swap.max" 2>/dev/null || true
    LIMIT_FILE=memory.max; USAGE_FILE=memory.current; PEAK_FILE=memory.peak
else
    CG=/sys/fs/cgroup/memory$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)/nsqlookupd-memcap-$$
    mkdir "$CG"
    echo $(( LIMIT_MIB * 1048576 )) > "$CG/memory.limit_in_bytes"
    LIMIT_FILE=memory.limit_in_bytes; USAGE_FILE=memory.usage_in_bytes; PEAK_FILE=memory.max_usage_in_bytes
fi

PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rss_mib() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo gone; }
hwm_mib() { awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo gone; }
metric() { curl -sf "http://$HTTP/metrics" | awk -v s="$1" '$1==s{print $2}'; }

# One run: $1 = extra server flags ("" = no cap), $2 = label.
run() {
    local flags=$1 label=$2
    TCP=127.0.0.1:$(free_port); HTTP=127.0.0.1:$(free_port)
    echo 0 > "$CG/$PEAK_FILE" 2>/dev/null || true
    # Start the server inside the cgroup: the subshell joins it, then execs.
    # shellcheck disable=SC2086
    sh -c "echo \$\$ > '$CG/cgroup.procs'; exec '$SERVER' --tcp-address=$TCP --http-address=$HTTP --log-level=warn --lookup-cache-size=$(( CACHE_MIB << 20 )) $flags" \
        2> "$WORK/$label.log" &
    PID=$!
    local deadline=$(( SECONDS + 20 ))
    until curl -sf "http://$HTTP/ping" > /dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "server did not start"; cat "$WORK/$label.log"; exit 1; }
        sleep 0.1
    done
    echo "== $label: server pid $PID, flags: ${flags:-none}, memory limit $LIMIT_MIB MiB (cgroup $CG)"
    echo "   idle: RSS $(rss_mib $PID) MiB"

    local common=(--nodes "$NODES" --topics-per-node "$TOPICS" --topic-universe "$TOPICS"
                  --channels "$CHANNELS" --tcp-address "$TCP" --server-pid "$PID")
    # Fleet A: registers completely, then stays connected while B runs.
    "$BENCH" fleet "${common[@]}" --topic-prefix a --duration $(( B_SECONDS + 60 ))s \
        > "$WORK/$label-a.txt" 2>&1 &
    local a=$!
    deadline=$(( SECONDS + 300 ))
    local want=$(( NODES * TOPICS * (1 + CHANNELS) + NODES ))
    until [ "$(metric nsqlookupd_registrations)" = "$want" ]; do
        if ! kill -0 "$PID" 2>/dev/null; then echo "   server died while A registered"; break; fi
        [ $SECONDS -lt $deadline ] || { echo "fleet A not registered in 300 s"; break; }
        sleep 0.5
    done
    echo "   fleet A registered: $(metric nsqlookupd_registrations) pairs; RSS $(rss_mib $PID) MiB"

    # Fleet B: as much again, offered for B_SECONDS.
    timeout $(( B_SECONDS + 5 )) "$BENCH" fleet "${common[@]}" --topic-prefix b --duration 1s \
        --register-timeout "${B_SECONDS}s" > "$WORK/$label-b.txt" 2>&1 || true
    echo "   offered: A $(( NODES * TOPICS * (1 + CHANNELS) )) + B $(( NODES * TOPICS * (1 + CHANNELS) )) registrations = $(( 2 * NODES * TOPICS * (1 + CHANNELS) )) (cap ${flags:-none})"

    if kill -0 "$PID" 2>/dev/null; then
        local ping lookups=0 bad=0 t
        ping=$(curl -s -o /dev/null -w '%{http_code}' "http://$HTTP/ping")
        # Every node of fleet A registered every topic of A (universe = topics
        # per node): each of A's topics must list NODES producers.
        for t in $(curl -sf "http://$HTTP/topics" \
                   | python3 -c 'import json,sys; ts=[t for t in json.load(sys.stdin)["topics"] if t.startswith("a.")]; print(" ".join(ts[::max(1,len(ts)//20)]))'); do
            lookups=$(( lookups + 1 ))
            local n
            n=$(curl -sf "http://$HTTP/lookup?topic=$t" \
                | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["producers"]))' || echo 0)
            [ "$n" = "$NODES" ] || bad=$(( bad + 1 ))
        done
        echo "   SURVIVED: /ping $ping; /lookup of fleet A's topics: $lookups asked, $bad without all $NODES producers"
        echo "   registrations held $(metric nsqlookupd_registrations) (limit $(metric nsqlookupd_registrations_limit)), keys $(( $(metric nsqlookupd_topics) + $(metric nsqlookupd_channels) ))"
        echo "   refused: $(metric 'nsqlookupd_registrations_refused_total{reason="max_registrations"}') (max_registrations), $(metric 'nsqlookupd_registrations_refused_total{reason="max_keys"}') (max_keys)"
        echo "   RSS now $(rss_mib $PID) MiB, peak $(hwm_mib $PID) MiB; cgroup usage $(( $(cat "$CG/$USAGE_FILE") / 1048576 )) MiB, peak $(( $(cat "$CG/$PEAK_FILE") / 1048576 )) MiB, limit $(( $(cat "$CG/$LIMIT_FILE") / 1048576 )) MiB"
        grep -m3 'refused' "$WORK/$label.log" | sed 's/^/   log: /' || true
        kill "$PID"; wait "$PID" 2>/dev/null || true
    else
        local rc=0
        wait "$PID" 2>/dev/null || rc=$?
        echo "   KILLED: the server exited with status $rc (137: SIGKILL, the cgroup's OOM killer); cgroup peak $(( $(cat "$CG/$PEAK_FILE") / 1048576 )) MiB, limit $(( $(cat "$CG/$LIMIT_FILE") / 1048576 )) MiB, times the limit was hit: $(cat "$CG/memory.failcnt" 2>/dev/null || grep -s oom_kill "$CG/memory.events" || echo '?')"
        grep -i 'oom\|memory' "$WORK/$label.log" | tail -3 | sed 's/^/   log: /' || true
    fi
    PID=
    kill "$a" 2>/dev/null; wait "$a" 2>/dev/null || true
    echo "   fleet A: $(grep -m1 '^registration:' "$WORK/$label-a.txt" || echo '?')"
    echo "   fleet B: $(grep -m1 -i 'errors\|registration:' "$WORK/$label-b.txt" || echo '?')"
}

run "--max-registrations=$CAP" capped
if [ "$CONTROL" = 1 ]; then
    run "" uncapped
fi
echo "raw output in $WORK"
