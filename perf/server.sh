# Sourced by perf/measure.sh, perf/alternate.sh, perf/access.sh and
# perf/cluster.sh.
#
#   release_binaries
#
# Sets server and bench: SERVER_BIN and BENCH_BIN, else the release builds,
# both built first unless SERVER_BIN is set.
release_binaries() {
    server=${SERVER_BIN:-target/release/nsqlookupd}
    bench=${BENCH_BIN:-target/release/nsqlookupd-bench}
    [ -n "${SERVER_BIN:-}" ] || cargo build --release --bin nsqlookupd --bin nsqlookupd-bench
}

#   start_server LOG COMMAND...
#
# Runs COMMAND (a server binary, possibly behind taskset/chrt) in the
# background on ephemeral ports, logging to LOG, waits until it listens,
# and sets server_pid, server_tcp and server_http.
start_server() {
    start_server_at "$1" 127.0.0.1:0 127.0.0.1:0 "${@:2}"
}

#   start_server_at LOG TCP_ADDR HTTP_ADDR COMMAND...
#
# The same on given addresses (a server restarted on the ports it had).
start_server_at() {
    local log=$1 tcp=$2 http=$3
    shift 3
    "$@" --tcp-address="$tcp" --http-address="$http" 2>"$log" &
    server_pid=$!
    for _ in $(seq 100); do grep -q 'HTTP: listening' "$log" && break; sleep 0.1; done
    server_tcp=$(grep -o 'TCP: listening on [0-9.:]*' "$log" | awk '{print $4}')
    server_http=$(grep -o 'HTTP: listening on [0-9.:]*' "$log" | awk '{print $4}')
}
