#!/usr/bin/env bash
# Memory and /nodes with gzip answers (issue 15, point 5), at one preset:
#
#   perf/gzip_memory.sh PRESET      (the issue's figures are for large)
#
# Two servers, one after the other, each with PRESET's fleet registered
# (pinned to core 0, loads from core 1):
#   A: plain clients only, until every topic has been looked up (RSS: the
#      plain-only figure of today's server);
#   B: gzip clients only, until every topic has been looked up (RSS), then
#      plain clients too (RSS with both kinds cached).
# "Every topic looked up": 64 connections for 20 s of random topics, at
# least 10 requests per topic on average (the bench's --topics-pct 100).
# Then, on B: one /nodes for a gzip client (curl --compressed) and for a
# plain one, cold (just after a change) and warm (cached), end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh
preset=${1:?usage: perf/gzip_memory.sh PRESET}
release_binaries
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
rss() { awk '/^VmRSS:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }
cover() { # HTTP PID [--accept-gzip]
    taskset -c 1 "$bench" consumers --preset "$preset" --workers 64 --duration 20s \
        --http-address "$1" --server-pid "$2" "${@:3}" --json "$tmp/cover.json" >/dev/null 2>&1
    python3 -c "import json,sys; l=json.load(open(sys.argv[1]))['lookups']; e=l.get('encoding') or {}; print(f\"{l['requests_ok']:,} lookups, {sum((l.get('errors') or {}).values())} errors, {e.get('answers_gzip', 0):,} gzip\")" "$tmp/cover.json"
}
registered() { # LOG TCP
    taskset -c 1 "$bench" fleet --preset "$preset" --tcp-address "$2" --duration 3600s >"$1" 2>&1 &
    pids+=($!)
    for _ in $(seq 1200); do grep -q "registered in" "$1" && break; sleep 0.5; done
}

start_server "$tmp/a.log" taskset -c 0 "$server"
a_pid=$server_pid
pids+=("$a_pid")
registered "$tmp/fleet-a.log" "$server_tcp"
echo "A registered: RSS $(rss "$a_pid")"
echo "A plain clients: $(cover "$server_http" "$a_pid")"
echo "A plain-only, every topic looked up: RSS $(rss "$a_pid"), cache $(curl -s "http://$server_http/metrics" | awk '/^nsqlookupd_lookup_cache_bytes/ {printf "%.1f MiB", $2 / 1048576}')"
kill "${pids[@]}" 2>/dev/null || true
pids=()
sleep 1

start_server "$tmp/b.log" taskset -c 0 "$server"
b_pid=$server_pid b_http=$server_http
pids+=("$b_pid")
registered "$tmp/fleet-b.log" "$server_tcp"
echo "B registered: RSS $(rss "$b_pid")"
echo "B gzip clients: $(cover "$b_http" "$b_pid" --accept-gzip --gzip-decode checked)"
echo "B gzip-only, every topic looked up: RSS $(rss "$b_pid"), cache $(curl -s "http://$b_http/metrics" | awk '/^nsqlookupd_lookup_cache_bytes/ {printf "%.1f MiB", $2 / 1048576}')"
echo "B plain clients too: $(cover "$b_http" "$b_pid")"
echo "B both kinds, every topic looked up in both: RSS $(rss "$b_pid"), cache $(curl -s "http://$b_http/metrics" | awk '/^nsqlookupd_lookup_cache_bytes/ {printf "%.1f MiB", $2 / 1048576}')"

nodes() { # curl flags
    curl -s -o "$tmp/nodes.out" -w "%{time_total} s, %{size_download} bytes" "$@" "http://$b_http/nodes"
}
# gzip: as sent (curl asks for gzip and stores the compressed body: the
# time until its last byte) and as a client gets it (curl --compressed
# inflates the 105 MB while receiving, as Go's client does).
for kind in gzip plain; do
    case $kind in
        gzip) sent=(-H "Accept-Encoding: gzip") inflated=(--compressed) ;;
        plain) sent=() inflated=() ;;
    esac
    # A change (an admin topic create/delete) makes /nodes out of date.
    curl -s -X POST "http://$b_http/topic/create?topic=perf-nodes-$kind" >/dev/null
    echo "/nodes $kind, cold (rendered after a change): $(nodes "${sent[@]}")"
    for i in 1 2 3; do
        echo "/nodes $kind, warm (cached) $i: $(nodes "${sent[@]}")"
    done
    if [ "$kind" = gzip ]; then
        echo "/nodes gzip, warm, inflated by curl: $(nodes "${inflated[@]}")"
    fi
done
curl -s "http://$b_http/metrics" | grep -E '^nsqlookupd_(gzip_renders|http_gzip_|view_renders)'
