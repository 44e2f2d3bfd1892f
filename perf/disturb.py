#!/usr/bin/env python3
"""Faults for perf/faults.sh, against a running nsqlookupd (stdlib only).

    disturb.py probe       --tcp HOST:PORT [--interval 0.01] [--duration S] [--json F]
    disturb.py slow-reader --http HOST:PORT [--connections 10] [--path /nodes]
                           [--hold S] [--server-pid PID] [--json F]
    disturb.py abandoned   --http HOST:PORT [--connections 1000] [--hold S] [--json F]
    disturb.py burst       --http HOST:PORT [--connections 20000] [--over 1.0]
                           [--delay S] [--json F]

probe: one nsqd of its own (IDENTIFY as faults-probe.bench), sending one
command at a time (REGISTER, UNREGISTER of the topic faults.probe, PING),
every --interval, timing each answer as an nsqd does; until --duration or
SIGTERM. Reports the latency distribution, the worst answer and when it came.

slow-reader: N keep-alive connections that send pipelined GET requests as
long as the kernel takes them and never read an answer. Reports how many
request bytes the server took (bounded if it stops reading when it cannot
write) and, with --server-pid, the server's VmRSS before, at its highest
during the hold, and after the connections are closed.

abandoned: N keep-alive connections, one GET /ping answered on each, then
left open and idle (never closed) for --hold. Reports how many the server
closed meanwhile.

burst: N new connections paced evenly over --over seconds (after --delay),
each sending `GET /ping` with `Connection: close` and reading the answer.
Reports how long opening them took, connect and answer latency, and every
failure by kind (refused, reset, closed without an answer, timeout).

Every mode prints one JSON object on stdout at the end (and writes it to
--json). The soft RLIMIT_NOFILE is raised as far as allowed (root: the hard
limit too) before anything is opened.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time

# ---------------------------------------------------------------- helpers


def raise_nofile(want=1 << 20):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def addr(s):
    host, _, port = s.rpartition(":")
    return (host or "127.0.0.1", int(port))


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def summary_ms(vals):
    v = sorted(vals)
    if not v:
        return {"count": 0}
    return {
        "count": len(v),
        "p50_ms": round(pct(v, 50) * 1e3, 3),
        "p99_ms": round(pct(v, 99) * 1e3, 3),
        "p999_ms": round(pct(v, 99.9) * 1e3, 3),
        "max_ms": round(v[-1] * 1e3, 3),
        "over_100ms": sum(1 for x in v if x > 0.1),
    }


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def err_kind(e):
    if isinstance(e, int):
        code = e
    else:
        code = getattr(e, "errno", None)
    return {
        errno.ECONNREFUSED: "refused",
        errno.ECONNRESET: "reset",
        errno.EPIPE: "broken_pipe",
        errno.ETIMEDOUT: "timeout",
        errno.EADDRNOTAVAIL: "no_local_port",
        errno.EMFILE: "client_fd_limit",
        errno.ENFILE: "system_fd_limit",
    }.get(code, f"errno_{code}")


def finish(args, out):
    out["mode"] = args.mode
    text = json.dumps(out, indent=1, sort_keys=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)


stop = False
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h


def on_term(_sig, _frm):
    global stop
    stop = True


def ready(args):
    """Tells faults.sh that the disturbance is in place."""
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{time.time():.6f}\n")


def sleep_until_stop(seconds):
    end = time.monotonic() + seconds
    while not stop and time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


# ---------------------------------------------------------------- probe


def read_frame(s):
    def exact(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise ConnectionResetError(errno.ECONNRESET, "closed by the server")
            b += c
        return b

    (n,) = struct.unpack(">I", exact(4))
    return exact(n)


def probe(args):
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    identify = json.dumps(
        {
            "broadcast_address": "faults-probe.bench",
            "hostname": "faults-probe",
            "tcp_port": 19990,
            "http_port": 19991,
            "version": "1.3.0",
        }
    ).encode()
    lat = []
    worst = (0.0, None, None)  # latency, unix time, command
    errors = {}
    sessions = 0
    cmds = [b"REGISTER faults.probe\n", b"UNREGISTER faults.probe\n", b"PING\n"]
    k = 0
    start = time.monotonic()
    end = start + args.duration if args.duration else None
    s = None
    ready(args)
    while not stop and (end is None or time.monotonic() < end):
        try:
            if s is None:
                s = socket.create_connection(addr(args.tcp), timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sessions += 1
                t0 = time.monotonic()
                s.sendall(b"  V1IDENTIFY\n" + struct.pack(">i", len(identify)) + identify)
                read_frame(s)
                d = time.monotonic() - t0
                lat.append(d)
                if d > worst[0]:
                    worst = (d, time.time(), "IDENTIFY")
            cmd = cmds[k % 3]
            k += 1
            t0 = time.monotonic()
            s.sendall(cmd)
            f = read_frame(s)
            d = time.monotonic() - t0
            lat.append(d)
            if d > worst[0]:
                worst = (d, time.time(), cmd.split()[0].decode())
            if f != b"OK":
                errors["not_ok"] = errors.get("not_ok", 0) + 1
        except (OSError, socket.timeout) as e:
            kind = "timeout" if isinstance(e, socket.timeout) else err_kind(e)
            errors[kind] = errors.get(kind, 0) + 1
            if s is not None:
                s.close()
            s = None
            time.sleep(0.05)
            continue
        time.sleep(args.interval)
    if s is not None:
        s.close()
    out = {
        "tcp_address": args.tcp,
        "seconds": round(time.monotonic() - start, 3),
        "sessions": sessions,
        "answers": summary_ms(lat),
        "worst_command": worst[2],
        "worst_at_unix": worst[1],
        "errors": errors,
    }
    finish(args, out)


# ---------------------------------------------------------------- http helpers


def http_request(path, close=False):
    h = f"GET {path} HTTP/1.1\r\nHost: lookupd\r\nUser-Agent: faults-disturb\r\n"
    if close:
        h += "Connection: close\r\n"
    return (h + "\r\n").encode()


def read_http_answer(s, buf=b""):
    """Reads one answer (Content-Length framed) from a blocking socket;
    returns (status, leftover)."""
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            raise ConnectionResetError(errno.ECONNRESET, "closed before an answer")
        buf += c
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        c = s.recv(65536)
        if not c:
            raise ConnectionResetError(errno.ECONNRESET, "closed inside an answer")
        rest += c
    return status, rest[length:]


# ---------------------------------------------------------------- slow reader


def slow_reader(args):
    signal.signal(signal.SIGTERM, on_term)
    raise_nofile()
    pid = args.server_pid
    rss_before = rss_kib(pid) if pid else None
    req = http_request(args.path)
    conns = []
    for _ in range(args.connections):
        s = socket.create_connection(addr(args.http), timeout=5)
        # A small receive buffer: the server's answers back up sooner.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        conns.append(s)
    sent = [0] * len(conns)
    closed_by_server = 0
    chunk = req * 64

    def push():
        nonlocal closed_by_server
        for i, s in enumerate(conns):
            if s is None:
                continue
            while True:
                try:
                    n = s.send(chunk)
                    sent[i] += n
                    if n < len(chunk):
                        break
                except BlockingIOError:
                    break
                except OSError:
                    closed_by_server += 1
                    s.close()
                    conns[i] = None
                    break

    t0 = time.monotonic()
    push()
    ready(args)
    rss_peak = rss_before or 0
    timeline = []
    end = t0 + args.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.25)
        push()
        r = rss_kib(pid) if pid else None
        if r is not None:
            rss_peak = max(rss_peak, r)
            timeline.append((round(time.monotonic() - t0, 2), r, sum(sent)))
    rss_held = rss_kib(pid) if pid else None
    for s in conns:
        if s is not None:
            s.close()
    time.sleep(1.0)
    rss_after = rss_kib(pid) if pid else None
    total = sum(sent)
    out = {
        "http_address": args.http,
        "connections": args.connections,
        "path": args.path,
        "held_s": round(time.monotonic() - t0 - 1.0, 3),
        "request_bytes_taken": total,
        "requests_taken": total // len(req),
        "requests_taken_per_connection_max": max(sent) // len(req) if sent else 0,
        "closed_by_server": closed_by_server,
        "server_rss_kib_before": rss_before,
        "server_rss_kib_peak": rss_peak if pid else None,
        "server_rss_kib_end_of_hold": rss_held,
        "server_rss_kib_after_close": rss_after,
        # (seconds, RSS KiB, request bytes taken so far), every 0.25 s
        "timeline": timeline[:: max(1, len(timeline) // 40)],
    }
    finish(args, out)


# ---------------------------------------------------------------- abandoned


def abandoned(args):
    signal.signal(signal.SIGTERM, on_term)
    raise_nofile()
    req = http_request("/ping")
    conns = []
    errors = {}
    t0 = time.monotonic()
    for _ in range(args.connections):
        try:
            s = socket.create_connection(addr(args.http), timeout=5)
            s.sendall(req)
            status, _ = read_http_answer(s)
            if status != 200:
                errors[f"status_{status}"] = errors.get(f"status_{status}", 0) + 1
            s.setblocking(False)
            conns.append(s)
        except (OSError, socket.timeout) as e:
            kind = "timeout" if isinstance(e, socket.timeout) else err_kind(e)
            errors[kind] = errors.get(kind, 0) + 1
    opened_s = time.monotonic() - t0
    ready(args)
    sleep_until_stop(args.hold)
    # Which ones did the server close meanwhile (EOF readable)?
    closed = 0
    for s in conns:
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    held = time.monotonic() - t0
    for s in conns:
        s.close()
    out = {
        "http_address": args.http,
        "connections": args.connections,
        "opened": len(conns),
        "opened_in_s": round(opened_s, 3),
        "held_s": round(held, 3),
        "closed_by_server_during_hold": closed,
        "errors": errors,
    }
    finish(args, out)


# ---------------------------------------------------------------- burst


def burst(args):
    signal.signal(signal.SIGTERM, on_term)
    nofile = raise_nofile()
    target = addr(args.http)
    req = http_request("/ping", close=True)
    sel = selectors.DefaultSelector()
    n = args.connections
    errors = {}
    connect_lat = []
    answer_lat = []
    statuses = {}
    live = {}  # fd -> [sock, t_start, t_connected, buf, state]
    concurrent_max = 0

    def fail(fd, kind):
        errors[kind] = errors.get(kind, 0) + 1
        st = live.pop(fd)
        try:
            sel.unregister(st[0])
        except (KeyError, ValueError):
            pass
        st[0].close()

    ready(args)
    if args.delay:
        sleep_until_stop(args.delay)
    t0 = time.monotonic()
    t0_unix = time.time()
    started = 0
    last_started_at = None
    deadline_each = args.timeout
    last_scan = t0
    sources = []
    if target[0].startswith("127.") and args.sources > 0:
        sources = [f"127.0.1.{i + 1}" for i in range(args.sources)]
    while (started < n or live) and not stop:
        now = time.monotonic()
        due = min(n, int((now - t0) / args.over * n) + 1) if args.over > 0 else n
        while started < due:
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as ex:
                # The client's own fd limit (20,000 hard here, and raising
                # a hard limit needs CAP_SYS_RESOURCE): counted, not fatal.
                started += 1
                errors[err_kind(ex)] = errors.get(err_kind(ex), 0) + 1
                continue
            s.setblocking(False)
            if sources:
                # Spread over source addresses: connect()'s search for a
                # free local port slows down to milliseconds when one
                # address holds tens of thousands of ports.
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((sources[started % len(sources)], 0))
            t = time.monotonic()
            rc = s.connect_ex(target)
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                errors[err_kind(rc)] = errors.get(err_kind(rc), 0) + 1
                s.close()
                continue
            live[s.fileno()] = [s, t, None, b"", 0]
            sel.register(s, selectors.EVENT_WRITE)
        if started >= n and last_started_at is None:
            last_started_at = time.monotonic() - t0
        concurrent_max = max(concurrent_max, len(live))
        timeout = 0.0005 if started < n else 0.05
        for key, _ev in sel.select(timeout):
            s = key.fileobj
            fd = key.fd
            st = live.get(fd)
            if st is None:
                continue
            if st[4] == 0:
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    fail(fd, err_kind(e))
                    continue
                st[2] = time.monotonic()
                connect_lat.append(st[2] - st[1])
                try:
                    s.send(req)
                except OSError as ex:
                    fail(fd, err_kind(ex))
                    continue
                st[4] = 1
                sel.modify(s, selectors.EVENT_READ)
            else:
                try:
                    c = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as ex:
                    fail(fd, err_kind(ex) if not st[3] else "reset_after_answer")
                    continue
                if c:
                    st[3] += c
                    continue
                # EOF: the whole answer (Connection: close).
                if not st[3]:
                    fail(fd, "closed_without_answer")
                    continue
                try:
                    status = int(st[3].split(b" ", 2)[1])
                except (IndexError, ValueError):
                    status = -1
                statuses[status] = statuses.get(status, 0) + 1
                answer_lat.append(time.monotonic() - st[1])
                live.pop(fd)
                sel.unregister(s)
                s.close()
        # Timeouts, checked every 100 ms (a scan of every live socket).
        now = time.monotonic()
        if live and now - last_scan > 0.1:
            last_scan = now
            for fd in [fd for fd, st in live.items() if now - st[1] > deadline_each]:
                fail(fd, "timeout" if live[fd][4] else "connect_timeout")
    total_s = time.monotonic() - t0
    out = {
        "http_address": args.http,
        "connections": n,
        "over_s": args.over,
        "started_unix": round(t0_unix, 6),
        "opened_all_in_s": round(last_started_at, 3) if last_started_at is not None else None,
        "finished_in_s": round(total_s, 3),
        "connected": len(connect_lat),
        "answered": sum(statuses.values()),
        "answered_200": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "concurrent_max": concurrent_max,
        "connect": summary_ms(connect_lat),
        "answer": summary_ms(answer_lat),
        "client_nofile": list(nofile),
    }
    finish(args, out)


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("probe", "slow-reader", "abandoned", "burst"):
        q = sub.add_parser(name)
        q.add_argument("--json")
        q.add_argument("--ready-file", help="written once the disturbance is in place")
        if name == "probe":
            q.add_argument("--tcp", required=True)
            q.add_argument("--interval", type=float, default=0.01)
            q.add_argument("--duration", type=float, default=0.0, help="0: until SIGTERM")
        else:
            q.add_argument("--http", required=True)
        if name == "slow-reader":
            q.add_argument("--connections", type=int, default=10)
            q.add_argument("--path", default="/nodes")
            q.add_argument("--hold", type=float, default=10.0)
            q.add_argument("--server-pid")
        if name == "abandoned":
            q.add_argument("--connections", type=int, default=1000)
            q.add_argument("--hold", type=float, default=10.0)
        if name == "burst":
            q.add_argument("--connections", type=int, default=20000)
            q.add_argument("--over", type=float, default=1.0)
            q.add_argument("--delay", type=float, default=0.0)
            q.add_argument("--timeout", type=float, default=5.0)
            q.add_argument("--sources", type=int, default=16,
                           help="source addresses 127.0.1.1.. to spread over (loopback targets only; 0: one)")
    args = p.parse_args()
    {"probe": probe, "slow-reader": slow_reader, "abandoned": abandoned, "burst": burst}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
