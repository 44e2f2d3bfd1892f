#!/usr/bin/env python3
"""Turns the --json files of perf/measure.sh into the README's results table.

    perf/results_table.py perf/results/small.json perf/results/medium.json ...
"""
import json
import sys


def us(v):
    if v < 1000:
        return f"{v} µs"
    if v < 1_000_000:
        return f"{v / 1000:.2f} ms"
    return f"{v / 1_000_000:.2f} s"


def n(v):
    return f"{int(v):,}"


def other(x):
    m = (x or {}).get("machine")
    return f"{m['other_cores']:.2f}" if m else "-"


def cores(x, key):
    p = (x or {}).get(key)
    return f"{p['cores'] * 100:.0f}%" if p else "-"


def pct(l):
    l = l["latency"]
    return f"{us(l['p50_us'])} / {us(l['p99_us'])} / {us(l['p999_us'])}"


def table(head, rows):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


tcp, http = [], []
for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    name = r["workload"].get("preset") or "custom"
    g = r.get("registration") or {}
    lat = g.get("tcp_latency") or {}
    srv = g.get("server") or {}
    look = r.get("lookups") or {}
    ceil = r.get("ceiling") or {}
    clean = r.get("disconnect_cleanup") or {}
    tcp.append(
        [
            name,
            n(g.get("registrations", 0)),
            us(int(g.get("seconds", 0) * 1e6)),
            n(g.get("per_second", 0)),
            f"{g.get('server_cpu_us_per_registration') or 0:.2f} µs",
            f"{us(lat.get('p50_us', 0))} / {us(lat.get('p99_us', 0))} / {us(lat.get('max_us', 0))}",
            f"{n(lat.get('over_100ms', 0))} / {n(lat.get('over_1s', 0))}",
            f"{srv.get('rss_end_kib', 0) / 1024:.0f} MiB",
            f"{clean['seconds']:.1f} s, {clean['server_cpu_s']:.1f} CPU-s" if clean else "-",
            other(g),
        ]
    )
    if look:
        http.append(
            [
                name,
                n(look.get("mean_body_bytes") or 0),
                n(look["per_second"]),
                pct(look),
                cores(look, "server"),
                cores(look, "load_generator"),
                n(ceil["per_second"]) if ceil else "-",
                pct(ceil) if ceil else "-",
                f"{look['per_second'] / ceil['per_second'] * 100:.0f}%" if ceil and ceil["per_second"] else "-",
                f"{other(look)} / {other(ceil)}",
                "pass" if r.get("passed") else "FAIL",
            ]
        )

table(
    [
        "preset",
        "REGISTERs",
        "time",
        "reg/s",
        "server CPU / REGISTER",
        "TCP p50 / p99 / max",
        "> 100 ms / > 1 s",
        "server RSS",
        "server busy after disconnect",
        "other cores",
    ],
    tcp,
)
table(
    [
        "preset",
        "/lookup body",
        "server req/s",
        "p50 / p99 / p99.9",
        "server core",
        "bench core",
        "ceiling req/s",
        "ceiling p50 / p99 / p99.9",
        "server / ceiling",
        "other cores (server / ceiling)",
        "checks",
    ],
    http,
)
