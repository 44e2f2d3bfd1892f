# Sourced by perf/measure.sh and perf/alternate.sh.
#
#   start_server LOG COMMAND...
#
# Runs COMMAND (a server binary, possibly behind taskset/chrt) in the
# background on ephemeral ports, logging to LOG, waits until it listens,
# and sets server_pid, server_tcp and server_http.
start_server() {
    local log=$1
    shift
    "$@" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 2>"$log" &
    server_pid=$!
    for _ in $(seq 100); do grep -q 'HTTP: listening' "$log" && break; sleep 0.1; done
    server_tcp=$(grep -o 'TCP: listening on [0-9.:]*' "$log" | awk '{print $4}')
    server_http=$(grep -o 'HTTP: listening on [0-9.:]*' "$log" | awk '{print $4}')
}
