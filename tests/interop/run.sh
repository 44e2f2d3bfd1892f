#!/usr/bin/env bash
# Client-compatibility suite: real NSQ clients (pynsq, gnsq, nsqjs,
# tokio-nsq) discover a producer through this nsqlookupd.
#
# Each test spawns the server on 127.0.0.1:0 ports, registers over its TCP
# port a producer whose address is a listener owned by the test (a fake
# nsqd), starts the client's consumer against the server's HTTP address and
# waits for the client's "  V2" on that listener; then the producer
# unregisters and the client's next lookup must not return it. The access
# tests (*_access*, test_bearer_lookup.py) add an auth server
# (auth_server.py, python3 stdlib), allow-lists and HTTPS with certificates
# made here by pki.sh (openssl) into target/interop/pki.
#
# Needs: the Rust toolchain, python3 (with venv and pip), node and npm,
# openssl, and the package registries. Everything installed goes under
# target/interop/ (git-ignored), at the exact versions pinned in this folder:
#   python/requirements.txt, node/package-lock.json, tokio-nsq/Cargo.lock.
# Installs are reused on the next run while those files are unchanged.
# Exits non-zero if anything fails.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
HERE="$ROOT/tests/interop"
SCRATCH="$ROOT/target/interop"
PYTHON="${PYTHON:-python3}"
SUITE_TIMEOUT="${INTEROP_SUITE_TIMEOUT:-120}"   # seconds, per test run
mkdir -p "$SCRATCH"

export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree
export INTEROP_HEADERS_DIR="$SCRATCH/headers"
rm -rf "$INTEROP_HEADERS_DIR"
# The auth server fixture, started by every harness (node's and Rust's too).
export INTEROP_PYTHON="$PYTHON"

echo "== interop: test certificates (target/interop/pki)"
export INTEROP_PKI_DIR="$SCRATCH/pki"
bash "$HERE/pki.sh" "$INTEROP_PKI_DIR"

echo "== interop: building nsqlookupd"
cargo build --bin nsqlookupd
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
export NSQLOOKUPD_BIN="$target_dir/debug/nsqlookupd"
test -x "$NSQLOOKUPD_BIN"

echo "== interop: Python clients (target/interop/venv)"
VENV="$SCRATCH/venv"
if ! cmp -s "$HERE/python/requirements.txt" "$VENV/.installed-requirements.txt"; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --no-deps -r "$HERE/python/requirements.txt"
  "$VENV/bin/python" -m pip check
  cp "$HERE/python/requirements.txt" "$VENV/.installed-requirements.txt"
fi

echo "== interop: Node client (target/interop/npm)"
NPM_DIR="$SCRATCH/npm"
if ! cmp -s "$HERE/node/package-lock.json" "$NPM_DIR/.installed-package-lock.json"; then
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  cp "$HERE/node/package.json" "$HERE/node/package-lock.json" "$NPM_DIR/"
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$HERE/node/package-lock.json" "$NPM_DIR/.installed-package-lock.json"
fi

echo "== interop: Rust client (target/interop/cargo)"
TOKIO_NSQ=(cargo test --locked --manifest-path "$HERE/tokio-nsq/Cargo.toml")
CARGO_TARGET_DIR="$SCRATCH/cargo" "${TOKIO_NSQ[@]}" --no-run

passed=0
failed=0
failures=()
suite() {
  local name="$1"
  shift
  echo "== interop: $name"
  if timeout --kill-after=10 "$SUITE_TIMEOUT" "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

suite "pynsq + gnsq (pytest)" \
  bash -c 'cd "$1/python" && exec "$2/bin/python" -m pytest -v' _ "$HERE" "$VENV"
suite "nsqjs (node --test)" \
  env NODE_PATH="$NPM_DIR/node_modules" node --test \
  "$HERE/node/nsqjs.test.js" "$HERE/node/nsqjs_access.test.js"
suite "tokio-nsq (cargo test)" \
  env CARGO_TARGET_DIR="$SCRATCH/cargo" "${TOKIO_NSQ[@]}"

# The same clients again with every answer that can be compressed sent
# gzip to those that ask for it (pynsq, nsqjs; gnsq asks for identity,
# tokio-nsq for nothing): discovery must work the same.
export NSQLOOKUPD_EXTRA_ARGS="--http-compression-min-size=1"
suite "pynsq + gnsq, gzip answers (pytest)" \
  bash -c 'cd "$1/python" && exec "$2/bin/python" -m pytest -q' _ "$HERE" "$VENV"
suite "nsqjs, gzip answers (node --test)" \
  env NODE_PATH="$NPM_DIR/node_modules" node --test \
  "$HERE/node/nsqjs.test.js" "$HERE/node/nsqjs_access.test.js"
suite "tokio-nsq, gzip answers (cargo test)" \
  env CARGO_TARGET_DIR="$SCRATCH/cargo" "${TOKIO_NSQ[@]}"
unset NSQLOOKUPD_EXTRA_ARGS

echo "== interop: versions tested"
"$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
  grep -Ei '^(pynsq|gnsq|tornado|urllib3|gevent) ' || true
echo "nsqjs $(node -p "require('$NPM_DIR/node_modules/nsqjs/package.json').version")"
grep -A1 '^name = "tokio-nsq"$' "$HERE/tokio-nsq/Cargo.lock" | sed -n 's/^version = "\(.*\)"/tokio-nsq \1/p'

echo "== interop: request heads each client's consumer sent to /lookup"
for f in "$INTEROP_HEADERS_DIR"/*.txt; do
  [ -e "$f" ] || continue
  echo "$(basename "$f" .txt):"
  sed 's/^/  /' "$f"
done

if [ "$failed" -ne 0 ]; then
  echo "interop: failed suites: ${failures[*]}"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
