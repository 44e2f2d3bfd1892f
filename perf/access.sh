#!/usr/bin/env bash
# What access control and TLS cost a /lookup, measured in alternating
# rounds in one run (issue 14, point 6):
#
#   perf/access.sh PRESET [ROUNDS [JSON]]       (default: medium, 3 rounds)
#
# Two servers, each with its own registered fleet of PRESET, pinned to
# core 0 and loaded one at a time from core 1 (64 keep-alive connections,
# 3 s of warm-up + 8 s measured, as perf/alternate.sh):
#   A, no access flag, plain HTTP and HTTPS (--tls-cert): "plain" is
#     today's path, "tls" the same lookups over TLS 1.3 kept alive;
#   B, --auth-http-address (an auth server granting subscribe on every
#     topic, python's http.server on core 1): "auth" is the same lookups
#     over plain HTTP with a Bearer secret, answered from the auth cache
#     after the first query.
# Each round runs plain, tls and auth in turn, so that a drift of the
# machine's speed hits all three. Prints one line a round and the medians;
# with JSON, writes every figure there. Certificates are made with openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh
preset=${1:-medium}
rounds=${2:-3}
json_out=${3:-}
release_binaries
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# A CA and a certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" -subj /CN=perf-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp/server.key" -out "$tmp/server.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tmp/server.ext"
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -CAcreateserial -days 2 -extfile "$tmp/server.ext" -out "$tmp/server.pem" 2>/dev/null

# The auth server: nsqd's protocol, every secret granted subscribe on all topics.
taskset -c 1 python3 - "$tmp/auth.port" <<'PY' &
import json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class Auth(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ttl": 3600, "identity": "bench", "identity_url": "",
            "authorizations": [{"topic": ".*", "channels": [".*"], "permissions": ["subscribe"]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Auth)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/auth.port" ] && break; sleep 0.1; done
auth="127.0.0.1:$(cat "$tmp/auth.port")"
echo secret-for-the-bench >"$tmp/secret"

start_server "$tmp/a.log" taskset -c 0 "$server" --https-address=127.0.0.1:0 \
    --tls-cert="$tmp/server.pem" --tls-key="$tmp/server.key"
a_pid=$server_pid a_tcp=$server_tcp a_http=$server_http
pids+=("$a_pid")
for _ in $(seq 100); do grep -q 'HTTPS: listening' "$tmp/a.log" && break; sleep 0.1; done
a_https=$(grep -o 'HTTPS: listening on [0-9.:]*' "$tmp/a.log" | awk '{print $4}')
start_server "$tmp/b.log" taskset -c 0 "$server" --auth-http-address="$auth"
b_pid=$server_pid b_tcp=$server_tcp b_http=$server_http
pids+=("$b_pid")

for tcp in "$a_tcp" "$b_tcp"; do
    taskset -c 1 "$bench" fleet --preset "$preset" --tcp-address "$tcp" --duration 3600s \
        >"$tmp/fleet-$tcp.log" 2>&1 &
    pids+=($!)
done
for tcp in "$a_tcp" "$b_tcp"; do
    for _ in $(seq 1200); do grep -q "registered in" "$tmp/fleet-$tcp.log" && break; sleep 0.5; done
done

load=(--preset "$preset" --workers 64 --warmup 3s --duration 8s)
for r in $(seq "$rounds"); do
    taskset -c 1 "$bench" consumers "${load[@]}" --http-address "$a_http" --server-pid "$a_pid" \
        --json "$tmp/plain-$r.json" >/dev/null 2>&1
    taskset -c 1 "$bench" consumers "${load[@]}" --http-address "https://$a_https" \
        --http-ca-file "$tmp/ca.pem" --server-pid "$a_pid" --json "$tmp/tls-$r.json" >/dev/null 2>&1
    taskset -c 1 "$bench" consumers "${load[@]}" --http-address "$b_http" \
        --auth-secret-file "$tmp/secret" --server-pid "$b_pid" --json "$tmp/auth-$r.json" >/dev/null 2>&1
done
auth_queries=$(curl -s "http://$b_http/metrics" | awk '/^nsqlookupd_auth_queries_total\{outcome="ok"\}/ {print $2}')

python3 - "$tmp" "$preset" "$rounds" "$auth_queries" "$json_out" <<'PY'
import json, statistics, sys
tmp, preset, rounds, queries, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
modes = ("plain", "tls", "auth")
figures = {m: [] for m in modes}
for r in range(1, rounds + 1):
    line = []
    for m in modes:
        l = json.load(open(f"{tmp}/{m}-{r}.json"))["lookups"]
        p = l["server"]
        errors = sum((l.get("errors") or {}).values())
        f = {"per_second": l["per_second"], "errors": errors,
             "cpu_us_per_request": p["cores"] * 1e6 / l["per_second"],
             "p50_us": l["latency"]["p50_us"], "p99_us": l["latency"]["p99_us"]}
        figures[m].append(f)
        line.append(f"{m} {f['per_second']:,.0f} req/s ({f['cpu_us_per_request']:.2f} us CPU, {errors} errors)")
    print(f"{preset} round {r}: " + ", ".join(line))
med = {m: statistics.median(f["per_second"] for f in figures[m]) for m in modes}
# Each round's ratio to the plain figure of the same round (the machine's
# drift between rounds cancels), and the median of those.
ratios = {m: [f["per_second"] / p["per_second"] for f, p in zip(figures[m], figures["plain"])]
          for m in ("tls", "auth")}
for m in ("tls", "auth"):
    each = ", ".join(f"{x:.1%}" for x in ratios[m])
    print(f"{preset}: {m} / plain per round {each}; median {statistics.median(ratios[m]):.1%} "
          f"(median rates: {m} {med[m]:,.0f}, plain {med['plain']:,.0f} req/s)")
print(f"auth server queries for the whole auth run: {queries}")
if out:
    json.dump({"preset": preset, "rounds": figures, "medians": med, "ratios": ratios,
               "median_ratios": {m: statistics.median(v) for m, v in ratios.items()},
               "auth_queries": queries},
              open(out, "w"), indent=2)
PY
