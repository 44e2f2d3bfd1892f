#!/usr/bin/env python3
"""A small auth server speaking nsqd's auth protocol, for the interop tests
(see ../../../shared/spec/auth.md; Python stdlib only, so that the Python,
Node and Rust harnesses can all start it as a subprocess).

    python3 auth_server.py GRANTS

GRANTS is a JSON object, inline or the path of a file holding it, mapping
each secret to the answer it gets:

    {"good": {"ttl": 60, "identity": "interop",
              "authorizations": [{"topic": "^t$", "channels": [".*"],
                                  "permissions": ["subscribe"]}]},
     "locked": 403}

An object is sent as a 200 JSON answer, a number as that status with
`{"message": "AUTH_FAILED"}`; an unknown or missing secret gets 403.

It listens on 127.0.0.1:0 (ThreadingHTTPServer) and writes to stdout, one
line each, flushed:

    LISTENING 127.0.0.1:PORT
    AUTH {"method": "GET", "path": "/auth", "params": {...}, "status": 200}

one AUTH line per request, with the request's parameters (`secret`,
`remote_ip`, `tls`, `common_name`) from the query string (GET) or the body
(POST: a form, or nsqd's JSON `{"name": ["value"]}`). It stops on SIGTERM,
and when its stdin is a pipe or socket that closes (the harness that started
it went away).
"""

import json
import os
import signal
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
_out_lock = threading.Lock()


def emit(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def load_grants(arg):
    text = arg
    if not arg.lstrip().startswith("{") and os.path.exists(arg):
        with open(arg, encoding="utf-8") as f:
            text = f.read()
    grants = json.loads(text)
    if not isinstance(grants, dict):
        raise SystemExit("GRANTS must be a JSON object: secret -> answer")
    for secret, answer in grants.items():
        if not isinstance(answer, (dict, int)) or isinstance(answer, bool):
            raise SystemExit(f"the answer for {secret!r} must be an object or a status")
    return grants


def first_values(multi):
    out = {}
    for name, values in multi.items():
        if isinstance(values, list):
            out[name] = values[0] if values else ""
        else:
            out[name] = str(values)
    return out


class Handler(BaseHTTPRequestHandler):
    server_version = "interop-auth/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # stdout is the harness's channel
        pass

    def _params(self):
        params = first_values(parse_qs(urlsplit(self.path).query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length).decode("utf-8", "replace")
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                try:
                    decoded = json.loads(body)
                except ValueError:
                    decoded = {}
                if isinstance(decoded, dict):
                    params.update(first_values(decoded))
            else:
                params.update(first_values(parse_qs(body, keep_blank_values=True)))
        return params

    def _answer(self):
        path = urlsplit(self.path).path
        params = self._params()
        answer = self.server.grants.get(params.get("secret"), 403)
        if path != "/auth":
            answer = 404
        if isinstance(answer, dict):
            status, body = 200, answer
        else:
            status, body = answer, {"message": "AUTH_FAILED"}
        emit(
            "AUTH "
            + json.dumps(
                {"method": self.command, "path": path, "params": params, "status": status},
                sort_keys=True,
            )
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    server.grants = load_grants(sys.argv[1])

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        server.shutdown()

    # Only a pipe (node's are socket pairs): /dev/null would read as closed
    # at once.
    mode = os.fstat(sys.stdin.fileno()).st_mode if sys.stdin is not None else 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        threading.Thread(target=watch_stdin, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    emit(f"LISTENING {HOST}:{server.server_address[1]}")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
