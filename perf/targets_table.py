#!/usr/bin/env python3
"""Prints the issue-4 targets table from the JSON files of perf/targets.sh.

    perf/targets_table.py perf/results/targets
"""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "perf/results/targets"
PRESETS = ["small", "medium", "large"]


def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ms(us):
    return f"{us / 1000:.2f} ms"


def errors(look):
    return sum((look.get("errors") or {}).values())


def verdict(ok):
    return "**yes**" if ok else "**no**"


def lookup_latency(look):
    """Latency of /lookup requests alone when the run mixed kinds."""
    return (look.get("latency_by_kind") or {}).get("lookup") or look["latency"]


def per_preset(name):
    """[(preset, data)] of the files `name` (formatted with the preset)
    that exist, and whether every preset had one."""
    found = [(p, load(name.format(p))) for p in PRESETS]
    present = [(p, d) for p, d in found if d]
    return present, len(present) == len(PRESETS)


rows = []
closed = {p: load(p + "-closed") for p in PRESETS}
opened = {p: load(p + "-open") for p in PRESETS}

# 1. throughput next to the ceiling: judged on the median ratio of the
# alternating rounds (PRESET-alternate), shown next to the single run
alternating = {p: load(p + "-alternate") for p in PRESETS}
parts, ok, ratios = [], True, {}
for p in PRESETS:
    r, a = closed[p], alternating[p]
    text = []
    if a:
        rs = [x["ratio"] for x in a["rounds"]]
        ratios[p] = a["median_ratio"]
        ok &= a["median_ratio"] >= 0.8 and all(x["server_errors"] == 0 for x in a["rounds"])
        text.append(f"median {a['median_ratio']:.0%} of {len(rs)} alternating rounds ({min(rs):.0%}-{max(rs):.0%})")
    if r and r.get("ceiling"):
        s, c = r["lookups"]["per_second"], r["ceiling"]["per_second"]
        ok &= errors(r["lookups"]) == 0
        text.append(f"single run {s:,.0f} vs {c:,.0f} req/s = {s / c:.0%}")
    if text:
        parts.append(f"{p}: " + ", ".join(text))
rows.append(["1", "/lookup closed loop ≥ 80 % of the ceiling, every preset", "; ".join(parts), verdict(ok and len(ratios) == 3), "`*-alternate`, `*-closed`"])
if "small" in ratios and "large" in ratios and closed["small"] and closed["large"]:
    d = ratios["large"] / ratios["small"] - 1
    a = closed["large"]["lookups"]["per_second"] / closed["small"]["lookups"]["per_second"]
    rows.append(["1b", "large within 10 % of small", f"share of the ceiling (medians): large {ratios['large']:.0%} vs small {ratios['small']:.0%} ({d:+.0%}); absolute req/s large/small = {a:.2f} (answers of {closed['large']['lookups'].get('mean_body_bytes', 0):,} vs {closed['small']['lookups'].get('mean_body_bytes', 0):,} bytes)", verdict(abs(d) <= 0.10), "`*-alternate`, `*-closed`"])

# 2. open loop at half the maximum (normal priority, then server SCHED_FIFO and bench nice -20)
for tag, label in [("open", ""), ("open-rt", ", server SCHED_FIFO, bench nice -20")]:
    runs, ok = per_preset("{}-" + tag)
    parts = []
    for p, r in runs:
        l = r["lookups"]
        lat = l["latency"]
        good = lat["p99_us"] < 1000 and lat["p999_us"] < 5000 and errors(l) == 0 and l.get("unsent", 0) == 0
        ok &= good
        parts.append(f"{p} at {l['rate']:,.0f}/s: p50 {ms(lat['p50_us'])}, p99 {ms(lat['p99_us'])}, p99.9 {ms(lat['p999_us'])}, max {ms(lat['max_us'])} (service time p99 {ms(l['service_time']['p99_us'])})")
    if runs:
        rows.append(["2", f"open loop at half the max: p99 < 1 ms, p99.9 < 5 ms{label}", "; ".join(parts), verdict(ok), f"`*-{tag}`"])

# 2, floor: the ceiling server at the same open-loop rate, in rounds
# alternating with the server's (normal priority)
runs, ok = per_preset("{}-open-alternate")
parts = []
for p, a in runs:
    n = len(a["rounds"])
    ok &= a["server_rounds_meeting_target_2"] == n
    parts.append(
        f"{p} at {a['rounds'][0]['rate']:,.0f}/s, {n} rounds each: ceiling met it in {a['ceiling_rounds_meeting_target_2']}"
        f" (median p99 {ms(a['ceiling_median_p99_us'])}, p99.9 {ms(a['ceiling_median_p999_us'])}), server in"
        f" {a['server_rounds_meeting_target_2']} (median p99 {ms(a['server_median_p99_us'])}, p99.9 {ms(a['server_median_p999_us'])})")
if runs:
    rows.append(["2", "the same, next to the ceiling server at the same rate (alternating rounds, normal priority)", "; ".join(parts), verdict(ok), "`*-open-alternate`"])

# 3. registration cost
parts, ok = [], True
for p, r in closed.items():
    if not r:
        ok = False
        continue
    g = r["registration"]
    cpu = g.get("server_cpu_us_per_registration")
    ok &= cpu is not None and cpu <= 2.0
    parts.append(f"{p} {cpu:.2f} µs/reg in {g['seconds']:.2f} s")
    if p == "medium":
        ok &= g["seconds"] <= 2.0
rows.append(["3", "≤ 2 µs server CPU per registration; medium registered ≤ 2 s", "; ".join(parts), verdict(ok), "`*-closed`"])

# 4. storm
r, base = load("medium-storm"), closed.get("medium")
if r and r.get("storm"):
    st, l = r["storm"], r["lookups"]
    undisturbed = base["lookups"]["per_second"] if base else float("nan")
    worst = st["tcp_latency"]["max_us"]
    again = st.get("reregistered_after_s") or float("inf")
    ok = worst <= 100_000 and again <= 3 and l["per_second"] >= 0.5 * undisturbed and errors(l) == 0
    rows.append(["4", "storm at medium: TCP ≤ 100 ms, re-registered ≤ 3 s, lookups ≥ 50 %, 0 errors", f"worst TCP answer {ms(worst)}, re-registered in {again:.2f} s, lookups {l['per_second']:,.0f}/s over the run (undisturbed {undisturbed:,.0f}/s), slowest lookup {ms(l['latency']['max_us'])}, {errors(l)} errors", verdict(ok), "`medium-storm`"])

# 5. memory
parts, ok = [], True
for p, limit in [("medium", 40e6), ("large", 1.5e9)]:
    r = closed.get(p)
    if not r:
        ok = False
        continue
    rss = r["registration"]["server"]["rss_end_kib"] * 1024
    ok &= rss <= limit
    parts.append(f"{p} {rss / 2**20:,.1f} MiB ({rss / 1e6:,.1f} MB)")
rows.append(["5", "RSS after registering: medium ≤ 40 MB, large ≤ 1.5 GB", "; ".join(parts), verdict(ok), "`*-closed`"])

# 6. heavy reads (normal priority, then server SCHED_FIFO and bench nice -20)
for tag, label in [("heavy", ""), ("heavy-rt", ", server SCHED_FIFO, bench nice -20")]:
    r = load(f"medium-{tag}")
    if not r:
        continue
    l = r["lookups"]
    by = l.get("latency_by_kind") or {}
    look, nodes, topics = lookup_latency(l), by.get("nodes"), by.get("topics")
    ok = look["p99_us"] < 1000 and look["p999_us"] < 5000 and errors(l) == 0
    text = f"at {l['rate']:,.0f}/s: /lookup p99 {ms(look['p99_us'])}, p99.9 {ms(look['p999_us'])}"
    for name, h, limit in [("/nodes", nodes, 50_000), ("/topics", topics, 5_000)]:
        if h:
            ok &= h["p99_us"] <= limit
            text += f"; {name} ({h['count']:,} requests) p50 {ms(h['p50_us'])}, p99 {ms(h['p99_us'])}, max {ms(h['max_us'])}"
        else:
            ok = False
    rows.append(["6", f"/nodes ≤ 50 ms, /topics ≤ 5 ms at medium (p99), /lookup p99 still < 1 ms{label}", text, verdict(ok), f"`medium-{tag}`"])

print("| # | target | measured | met? | run |")
print("|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
