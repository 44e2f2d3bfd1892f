"""Shared pieces of the Python interop tests.

- `Lookupd`: the server under test, spawned on 127.0.0.1:0 ports; the bound
  addresses are parsed from its two `listening on` log lines.
- `FakeNsqd`: a TCP listener owned by the test, standing in for an nsqd. It
  records the first 4 bytes of every connection (a client must send "  V2")
  and closes it.
- `Registration`: one nsqd-style TCP connection to the server ("  V1",
  IDENTIFY, REGISTER, UNREGISTER), the way a real nsqd announces itself.
- `RecordingProxy`: a byte-for-byte TCP relay in front of the server's HTTP
  port that keeps the request heads clients send, to document their headers.
- `AuthServer`: ../auth_server.py (an nsqd-style auth server) as a
  subprocess; `pki()`: the test certificates of ../pki.sh; `refused()`,
  `handshake_failures()`: the server's refusal counters from /metrics;
  `wait_until()`: a condition polled up to a deadline.
- `Scene` (a context manager), `ALLOWED`, `NOT_ALLOWED`, `refused_twice()`,
  `handshake_failed_twice()`: what the access tests of every client share.
"""

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
DEADLINE = 15.0  # seconds a client gets to reach the fake nsqd

_LISTEN_RE = re.compile(r"INFO: (TCP|HTTPS|HTTP): listening on (\S+)")


def server_binary():
    explicit = os.environ.get("NSQLOOKUPD_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    return str(Path(target) / "debug" / "nsqlookupd")


def _split(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


class Lookupd:
    """The nsqlookupd under test, on ephemeral loopback ports."""

    def __init__(self, *extra_args):
        # A third listener with a certificate (the HTTPS flags of tls_args).
        want = {"TCP", "HTTP"}
        if any(a.startswith("--tls-cert=") for a in extra_args):
            want.add("HTTPS")
        self.proc = subprocess.Popen(
            [
                server_binary(),
                f"--tcp-address={HOST}:0",
                f"--http-address={HOST}:0",
                *os.environ.get("NSQLOOKUPD_EXTRA_ARGS", "").split(),
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        found = {}
        ready = threading.Event()

        def drain():
            # Keep reading stderr for the whole life of the process so the
            # server never blocks on a full pipe.
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                m = _LISTEN_RE.search(line)
                if m:
                    found[m.group(1)] = m.group(2)
                    if want <= set(found):
                        ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(10) or not want <= set(found):
            self.stop()
            raise RuntimeError(
                "nsqlookupd did not log its listening addresses (%s):\n"
                % ", ".join(sorted(want))
                + "\n".join(self.log)
            )
        self.tcp_host, self.tcp_port = _split(found["TCP"])
        self.http_host, self.http_port = _split(found["HTTP"])
        self.http_address = f"{self.http_host}:{self.http_port}"
        self.http_url = f"http://{self.http_address}"
        if "HTTPS" in found:
            self.https_host, self.https_port = _split(found["HTTPS"])
            self.https_url = f"https://{self.https_host}:{self.https_port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class FakeNsqd:
    """A listener that plays the nsqd a client connects to."""

    def __init__(self):
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.magics = []
        self._got = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while len(data) < 4:
                    chunk = conn.recv(4 - len(data))
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            self.magics.append(data)
            self._got.set()

    def wait_for_connection(self, timeout=DEADLINE, idle=None):
        """Wait for the first client connection; `idle` is called while
        waiting (the gevent test uses it to let its event loop run)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._got.is_set():
                return self.magics[0]
            if idle:
                idle(0.05)
            else:
                self._got.wait(0.05)
        raise AssertionError(f"no client reached the fake nsqd within {timeout}s")

    def close(self):
        self.sock.close()


def _read_frame(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("nsqlookupd closed the connection")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", exact(4))
    return exact(size)


class Registration:
    """One nsqd's TCP connection to the server."""

    def __init__(self, lookupd, tcp_port, http_port=4151, hostname="fake-nsqd"):
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.hostname = hostname
        self.sock = socket.create_connection((lookupd.tcp_host, lookupd.tcp_port), 5)
        self.sock.sendall(b"  V1")
        body = json.dumps(
            {
                "broadcast_address": HOST,
                "tcp_port": tcp_port,
                "http_port": http_port,
                "version": "1.3.0",
                "hostname": hostname,
            }
        ).encode()
        self.sock.sendall(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
        self.identify_response = json.loads(_read_frame(self.sock))
        self.local_address = "%s:%d" % self.sock.getsockname()[:2]

    def command(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return _read_frame(self.sock)

    def register(self, topic, channel=None):
        line = f"REGISTER {topic}" + (f" {channel}" if channel else "")
        assert self.command(line) == b"OK"

    def unregister(self, topic, channel=None):
        line = f"UNREGISTER {topic}" + (f" {channel}" if channel else "")
        assert self.command(line) == b"OK"

    def close(self):
        self.sock.close()


class RecordingProxy:
    """A transparent TCP relay to the server's HTTP port that keeps every
    byte clients send, so the request heads can be inspected."""

    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        self.url = f"http://{self.address}"
        self._sent = []  # one bytearray per client connection
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, 5)
            except OSError:
                client.close()
                continue
            buf = bytearray()
            with self._lock:
                self._sent.append(buf)
            threading.Thread(
                target=self._pump, args=(client, server, buf), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, None), daemon=True
            ).start()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    with self._lock:
                        record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def requests(self):
        """Request heads seen so far: [(request_line, [(name, value), ...])].
        The clients' lookups are GETs without a body, so heads follow each
        other on a connection."""
        out = []
        with self._lock:
            streams = [bytes(b) for b in self._sent]
        for stream in streams:
            for head in stream.split(b"\r\n\r\n"):
                if not head:
                    continue
                lines = head.decode("latin-1").split("\r\n")
                headers = []
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers.append((name, value.strip()))
                out.append((lines[0], headers))
        return out

    def close(self):
        self.sock.close()


def record_headers(client, requests):
    """Write the request heads a client sent to target/interop/headers/, for
    run.sh's summary (and the README's table)."""
    out_dir = Path(
        os.environ.get("INTEROP_HEADERS_DIR") or ROOT / "target" / "interop" / "headers"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    line, headers = requests[0]
    text = line + "\n" + "".join(f"  {n}: {v}\n" for n, v in headers)
    (out_dir / f"{client}.txt").write_text(text)


def wait_until(cond, timeout, what, idle=None):
    """Polls `cond` until it is true, for at most `timeout` seconds; `idle`
    (default time.sleep) is called between polls."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= end:
            raise AssertionError(f"{what}: not within {timeout}s")
        (idle or time.sleep)(0.05)


def metrics(lookupd):
    """The server's /metrics, as {'name{labels}': value}."""
    with urllib.request.urlopen(f"{lookupd.http_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def refused(lookupd, reason, cls="read"):
    """nsqlookupd_http_refused_total{class=cls,reason=reason}."""
    key = f'nsqlookupd_http_refused_total{{class="{cls}",reason="{reason}"}}'
    return metrics(lookupd).get(key, 0)


def handshake_failures(lookupd, reason):
    """nsqlookupd_tls_handshake_failures_total{reason=reason}."""
    key = f'nsqlookupd_tls_handshake_failures_total{{reason="{reason}"}}'
    return metrics(lookupd).get(key, 0)


INTEROP = ROOT / "tests" / "interop"


def pki():
    """The certificates of ../pki.sh: run.sh makes them in
    $INTEROP_PKI_DIR; made here (target/interop/pki) when run alone."""
    env_dir = os.environ.get("INTEROP_PKI_DIR")
    d = Path(env_dir) if env_dir else ROOT / "target" / "interop" / "pki"
    if not (d / "other-client.pem").exists():
        subprocess.run(["bash", str(INTEROP / "pki.sh"), str(d)], check=True)

    def pair(name):
        return SimpleNamespace(cert=str(d / f"{name}.pem"), key=str(d / f"{name}-key.pem"))

    return SimpleNamespace(
        ca=str(d / "ca.pem"),
        server=pair("server"),
        client=pair("client"),
        other_ca=str(d / "other-ca.pem"),
        other_client=pair("other-client"),
    )


def tls_args(certs, policy=None):
    """The server flags for HTTPS on 127.0.0.1:0 with `certs`' server
    certificate; with `policy`, client certificates checked against its CA."""
    args = [
        f"--https-address={HOST}:0",
        f"--tls-cert={certs.server.cert}",
        f"--tls-key={certs.server.key}",
    ]
    if policy:
        args += [f"--tls-root-ca-file={certs.ca}", f"--tls-client-auth-policy={policy}"]
    return args


def subscribe_grant(topic_pattern, ttl=60):
    """An auth server answer granting `subscribe` on topics matching
    `topic_pattern` (any channel)."""
    return {
        "ttl": ttl,
        "identity": "interop",
        "identity_url": "https://example.invalid/interop",
        "authorizations": [
            {"topic": topic_pattern, "channels": [".*"], "permissions": ["subscribe"]}
        ],
    }


class AuthServer:
    """../auth_server.py on 127.0.0.1:0; `requests` holds the parameters of
    every query it answered (dicts: method, path, params, status)."""

    def __init__(self, grants):
        self.proc = subprocess.Popen(
            [sys.executable, str(INTEROP / "auth_server.py"), json.dumps(grants)],
            stdin=subprocess.PIPE,  # it stops when this closes
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.requests = []
        found = []
        ready = threading.Event()

        def drain():
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                if line.startswith("LISTENING "):
                    found.append(line.split(" ", 1)[1])
                    ready.set()
                elif line.startswith("AUTH "):
                    self.requests.append(json.loads(line[5:]))
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(10) or not found:
            self.stop()
            raise RuntimeError("auth_server.py did not start: " + self.proc.stderr.read())
        self.address = found[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# The access tests' server flags: an auth server, and an allow-list that
# covers the client (127.0.0.1), or not (TEST-NET-1).
ALLOWED = ("--read-allow=127.0.0.0/8", "--auth-http-address={auth}")
NOT_ALLOWED = ("--read-allow=192.0.2.0/24", "--auth-http-address={auth}")


def refused_twice(lookupd, reason, kind):
    """The condition a refused client is waited for with: at least two of
    its lookups ended in `kind` (its Watched wrapper's `count(kind)`), and
    the server counted at least two read refusals for `reason`."""
    return lambda watched: watched.count(kind) >= 2 and refused(lookupd, reason) >= 2


def handshake_failed_twice(lookupd, reason, kind=Exception):
    """The same with the server's TLS handshake failures for `reason`."""
    return (
        lambda watched: watched.count(kind) >= 2 and handshake_failures(lookupd, reason) >= 2
    )


class Scene:
    """What an access test needs: an auth server answering `grants`, the
    server started with `args` (in which "{auth}" is the auth server's
    address), and a fake nsqd registered for `topic` and `channel`.
    close(), or the end of a `with` block, stops them all."""

    def __init__(self, topic, channel, *args, grants=None):
        self.auth = AuthServer(grants or {"granted": subscribe_grant(".*")})
        try:
            self.lookupd = Lookupd(*[a.replace("{auth}", self.auth.address) for a in args])
        except BaseException:
            self.auth.stop()
            raise
        self.fake = FakeNsqd()
        self.reg = Registration(self.lookupd, self.fake.port)
        self.reg.register(topic, channel)

    def close(self):
        self.reg.close()
        self.fake.close()
        self.lookupd.stop()
        self.auth.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
