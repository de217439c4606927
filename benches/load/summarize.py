#!/usr/bin/env python3
"""Turn run.sh's results.tsv (and rss.tsv) into Markdown tables.

Usage: summarize.py RESULTS_DIR [MORE_RESULTS_DIRS...]

Given several runs' directories, it reads them as one run (rounds 1..,
101.., 201..): a lead of a few percent needs more slices than one run of
3 rounds gives to stand out of this VM's noise.

Prints one table per round, the cutover ratios per round, a summary table
(median over rounds), the paired slices of all rounds together, the
issue's performance goal read off them, and the idle RSS table.

A run is measured in slices (run.sh's SLICE_SECONDS); a round's figures for
a case and proxy add its slices up: req/s is all requests over all the
time, CPU-µs/req all the CPU over all the requests, and p50 and p99 are the
slices' percentiles weighted by their requests (an approximation: the tools
report percentiles per run, not their histograms).
"""
import csv
import math
import random
import statistics
import sys
from collections import defaultdict

CASE_TITLES = {
    "h1-c50": "HTTP/1.1, 50 conns, 13 B",
    "h1-c200": "HTTP/1.1, 200 conns, 13 B",
    "h1-16k": "HTTP/1.1, 50 conns, 16 KiB",
    "h2c": "h2c, 50 clients x 10 streams",
    "rate": "HTTP/1.1 at fixed rate",
}
PROXIES = ["direct", "nginx", "haproxy", "cutover"]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired(raw, case, other, key):
    """cutover's ratio to `other` in each slice of `case`, over all rounds.

    A slice of cutover and the same slice of the other proxy ran back to
    back (run.sh takes slices in turn), so their ratio is as free of the
    machine's drift as this benchmark gets; the drift between slices is
    what the interval below is about.
    """
    at = {(r["round"], r.get("slice", "1"), r["proxy"]): num(r[key]) for r in raw if r["case"] == case}
    out = []
    for (rnd, sl, proxy), v in at.items():
        o = at.get((rnd, sl, other))
        if proxy == "cutover" and v and o:
            out.append(v / o)
    return out


def geomean_interval(ratios, draws=2000):
    """Geometric mean of the ratios, and a 95 % bootstrap interval for it.

    Seeded, so the same results.tsv prints the same interval.
    """
    logs = [math.log(r) for r in ratios]
    rng = random.Random(1)
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(draws))
    lo, hi = means[int(draws * 0.025)], means[int(draws * 0.975) - 1]
    return math.exp(statistics.fmean(logs)), math.exp(lo), math.exp(hi)


# (key in results.tsv, the direction that is better for cutover)
PAIRED_METRICS = (("rps", "higher"), ("cpu_us_per_req", "lower"), ("p99_ms", "lower"))


def paired_intervals(raw, cases):
    """{(case, other proxy, key): (geometric mean, low, high, slices won, slices)}.

    Computed once: the bootstrap is the slow part, and both the paired
    table and the goal read it.
    """
    out = {}
    for case in cases:
        for other in ("nginx", "haproxy"):
            for key, better in PAIRED_METRICS:
                rs = paired(raw, case, other, key)
                # at the fixed rate every proxy serves the rate: req/s tells nothing
                if not rs or (case == "rate" and key == "rps"):
                    continue
                won = sum(r > 1 if better == "higher" else r < 1 for r in rs)
                out[(case, other, key)] = geomean_interval(rs) + (won, len(rs))
    return out


def print_paired(intervals, cases, title):
    """All rounds' slices together: is cutover ahead beyond the noise?"""
    lines = []
    for case in cases:
        for other in ("nginx", "haproxy"):
            cells = []
            for key, _ in PAIRED_METRICS:
                found = intervals.get((case, other, key))
                if found:
                    g, lo, hi, won, n = found
                    cells.append(f"{g:.3f} ({lo:.3f}–{hi:.3f}), {won} of {n}")
                else:
                    cells.append("-")
            if any(c != "-" for c in cells):
                lines.append(f"| {title(case)} | {other} | " + " | ".join(cells) + " |")
    if not lines:
        return
    print("\n### All rounds' slices, paired\n")
    print("cutover's ratio to the other proxy in each slice: geometric mean over all slices of all rounds, "
          "its 95 % bootstrap interval, and in how many slices cutover was better. An interval that does "
          "not include 1 is a difference beyond this machine's slice-to-slice noise.\n")
    print("| case | against | req/s ratio (higher is better) | CPU-µs/req ratio (lower is better) | "
          "p99 ratio (lower is better) |\n|---|---|---|---|---|")
    print("\n".join(lines))


def print_goal(intervals, out):
    """Issue #6's goal against nginx, read off the paired slices.

    "Ahead" and "fewer" must hold beyond the noise (the whole interval on
    the right side of 1); "no higher" holds unless the whole interval is
    above 1. A case this run did not measure is left out.
    """
    rows = []
    for case, name in (("h1-c50", "50 connections"), ("h1-c200", "200 connections")):
        rps, p99 = intervals.get((case, "nginx", "rps")), intervals.get((case, "nginx", "p99_ms"))
        if rps:
            g, lo, hi, _, n = rps
            rows.append((f"more req/s than nginx, {name}", f"{g:.3f}× ({lo:.3f}–{hi:.3f}), {n} slices", lo > 1))
        if p99:
            g, lo, hi, _, _ = p99
            rows.append((f"p99 no higher than nginx's, {name}", f"{g:.3f}× ({lo:.3f}–{hi:.3f})", lo <= 1))
    cpu = intervals.get(("rate", "nginx", "cpu_us_per_req"))
    if cpu:
        g, lo, hi, _, n = cpu
        rows.append(("fewer CPU-µs/req than nginx at the fixed rate", f"{g:.3f}× ({lo:.3f}–{hi:.3f}), {n} slices", hi < 1))
    try:
        rss = {r["proxy"]: num(r["idle_kb"]) for r in csv.DictReader(open(f"{out}/rss.tsv"), delimiter="\t")}
    except FileNotFoundError:
        rss = {}
    if rss.get("cutover"):
        mib = rss["cutover"] / 1024
        rows.append(("idle RSS under 5 MiB", f"{mib:.2f} MiB", mib < 5))
    if not rows:
        return
    print("\n### The performance goal (issue #6), against nginx\n")
    print("From the paired slices above: \"more\" and \"fewer\" hold when the whole 95 % interval is on "
          "cutover's side of 1, \"no higher\" unless the whole interval is above 1.\n")
    print("| goal | measured | holds |\n|---|---|---|")
    for goal, measured, holds in rows:
        print(f"| {goal} | {measured} | {'yes' if holds else '**no**'} |")


def combine(slices):
    """One row for a round, case and proxy from its slices (see the top)."""
    first = slices[0]
    reqs = [num(r["requests"]) or 0 for r in slices]
    total = sum(reqs)
    secs = sum(n / num(r["rps"]) for n, r in zip(reqs, slices) if num(r["rps"]))

    def weighted(key):
        vals = [num(r[key]) for r in slices]
        if total == 0 or any(v is None for v in vals):
            return None
        return sum(v * n for v, n in zip(vals, reqs)) / total

    cpu_pcts = [num(r["cpu_pct"]) for r in slices]
    others = [num(r.get("other_pct")) for r in slices if num(r.get("other_pct")) is not None]
    busys = [num(r["busy_pct"]) for r in slices if num(r["busy_pct"]) is not None]
    errors = sum(int(r["errors"]) for r in slices if r["errors"].isdigit())
    return {
        "round": first["round"],
        "case": first["case"],
        "proxy": first["proxy"],
        "slices": len(slices),
        "rps": total / secs if secs else None,
        "p50_ms": weighted("p50_ms"),
        "p99_ms": weighted("p99_ms"),
        "requests": total,
        "errors": str(errors),
        "cpu_us_per_req": weighted("cpu_us_per_req"),
        "cpu_pct": None if any(v is None for v in cpu_pcts) else statistics.mean(cpu_pcts),
        "busy_pct": fmt(max(busys)) if busys else "-",
        "other_pct": max(others) if others else None,
        "note": first.get("note", ""),
    }


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: summarize.py RESULTS_DIR [MORE_RESULTS_DIRS...]")
    # Several runs are read as one: their rounds are numbered 1.., 101..,
    # 201.., and the memory and profile tables come from the last one.
    out = sys.argv[-1]
    raw = []
    for i, results in enumerate(sys.argv[1:]):
        for r in csv.DictReader(open(f"{results}/results.tsv"), delimiter="\t"):
            r["round"] = str(int(r["round"]) + 100 * i)
            raw.append(r)
    grouped = defaultdict(list)
    for r in raw:
        grouped[(int(r["round"]), r["case"], r["proxy"])].append(r)
    rows = [combine(slices) for slices in grouped.values()]
    # per slice: did cutover beat nginx / HAProxy (more req/s, less CPU per request)?
    slice_rows = {(int(r["round"]), r["case"], r["proxy"], r.get("slice", "1")): r for r in raw}
    ahead = defaultdict(lambda: [0, 0, 0, 0])  # (round, case, other) -> rps ahead, rps n, cpu ahead, cpu n
    for (rnd, case, proxy, sl), r in slice_rows.items():
        if proxy != "cutover":
            continue
        for other in ("nginx", "haproxy"):
            o = slice_rows.get((rnd, case, other, sl))
            if not o:
                continue
            count = ahead[(rnd, case, other)]
            # at the fixed rate both serve the rate: only CPU tells them apart
            if case != "rate" and num(r["rps"]) and num(o["rps"]):
                count[0] += num(r["rps"]) > num(o["rps"])
                count[1] += 1
            if num(r["cpu_us_per_req"]) and num(o["cpu_us_per_req"]):
                count[2] += num(r["cpu_us_per_req"]) < num(o["cpu_us_per_req"])
                count[3] += 1
    if not rows:
        print("(no measured runs)")
    cases = []
    for r in rows:
        if r["case"] not in cases:
            cases.append(r["case"])
    rounds = sorted({int(r["round"]) for r in rows})
    by = {(int(r["round"]), r["case"], r["proxy"]): r for r in rows}
    notes = {}
    for r in rows:
        notes[r["case"]] = r.get("note", "")

    def title(case):
        t = CASE_TITLES.get(case, case)
        if notes.get(case):
            t += f" ({notes[case]})"
        return t

    header = ("| case | proxy | req/s | p50 ms | p99 ms | proxy CPU-µs/req | proxy CPU % | errors | machine busy % before | other load % during |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    # ratios[case][metric][other] = list over rounds
    ratios = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for rnd in rounds:
        print(f"\n### Round {rnd}\n")
        print(header)
        for case in cases:
            for proxy in PROXIES:
                r = by.get((rnd, case, proxy))
                if not r:
                    continue
                print(f"| {title(case)} | {proxy} | {fmt(num(r['rps']))} | {fmt(num(r['p50_ms']), 3)} | "
                      f"{fmt(num(r['p99_ms']), 3)} | {fmt(num(r['cpu_us_per_req']), 1)} | {fmt(num(r['cpu_pct']))} | "
                      f"{r['errors']} | {r['busy_pct']} | {fmt(num(r.get('other_pct')))} |")
            c = by.get((rnd, case, "cutover"))
            for other in ("nginx", "haproxy"):
                o = by.get((rnd, case, other))
                if c and o:
                    ratios[case]["rps"][other].append(ratio(num(c["rps"]), num(o["rps"])))
                    ratios[case]["cpu"][other].append(ratio(num(c["cpu_us_per_req"]), num(o["cpu_us_per_req"])))
        print(f"\ncutover ratios, round {rnd} (req/s: higher is better for cutover; CPU-µs/req: lower is better):\n")
        print("| case | req/s ÷ nginx | req/s ÷ HAProxy | CPU/req ÷ nginx | CPU/req ÷ HAProxy | "
              "slices with more req/s than nginx / HAProxy | slices with less CPU/req than nginx / HAProxy |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
        for case in cases:
            vals = [ratios[case][m][o][-1] if ratios[case][m][o] and len(ratios[case][m][o]) == rounds.index(rnd) + 1 else None
                    for m in ("rps", "cpu") for o in ("nginx", "haproxy")]
            counts = {o: ahead.get((rnd, case, o)) for o in ("nginx", "haproxy")}
            won = lambda i: " / ".join(f"{c[i]} of {c[i + 1]}" if c and c[i + 1] else "-" for c in counts.values())
            print(f"| {title(case)} | " + " | ".join(fmt(v, 2) for v in vals) + f" | {won(0)} | {won(2)} |")

    print(f"\n### Summary: median over {len(rounds)} round(s)\n")
    print("| case | proxy | req/s | p50 ms | p99 ms | proxy CPU-µs/req | proxy CPU % | errors (sum) | other load % (max) |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        for proxy in PROXIES:
            rs = [by[(rnd, case, proxy)] for rnd in rounds if (rnd, case, proxy) in by]
            if not rs:
                continue
            med = {k: median([num(r[k]) for r in rs]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "cpu_pct")}
            errs = sum(int(r["errors"]) for r in rs if r["errors"].isdigit())
            others = [r["other_pct"] for r in rs if r["other_pct"] is not None]
            print(f"| {title(case)} | {proxy} | {fmt(med['rps'])} | {fmt(med['p50_ms'], 3)} | {fmt(med['p99_ms'], 3)} | "
                  f"{fmt(med['cpu_us_per_req'], 1)} | {fmt(med['cpu_pct'])} | {errs} | {fmt(max(others) if others else None)} |")

    print("\ncutover's ratios, per round (r1 / r2 / ...) and their median:\n")
    print("| case | req/s ÷ nginx | req/s ÷ HAProxy | CPU-µs/req ÷ nginx | CPU-µs/req ÷ HAProxy |\n|---|---|---|---|---|")
    for case in cases:
        cells = []
        for m in ("rps", "cpu"):
            for o in ("nginx", "haproxy"):
                vs = ratios[case][m][o]
                per = " / ".join(fmt(v, 2) for v in vs)
                cells.append(f"{per} → **{fmt(median(vs), 2)}**" if len(vs) > 1 else fmt(median(vs), 2))
        print(f"| {title(case)} | " + " | ".join(cells) + " |")

    intervals = paired_intervals(raw, cases)
    print_paired(intervals, cases, title)
    print_goal(intervals, out)

    try:
        rss = list(csv.DictReader(open(f"{out}/rss.tsv"), delimiter="\t"))
    except FileNotFoundError:
        rss = []
    if rss:
        print("\n### Memory (RSS, summed over the proxy's processes)\n")
        print("| proxy | processes | idle RSS MiB (after start, before load) | RSS MiB after all rounds |\n|---|---:|---:|---:|")
        for r in rss:
            idle = num(r["idle_kb"])
            after = num(r["after_kb"])
            print(f"| {r['proxy']} | {r['procs']} | {fmt(idle / 1024 if idle else None, 1)} | "
                  f"{fmt(after / 1024 if after else None, 1)} |")


    try:
        sc = list(csv.DictReader(open(f"{out}/syscalls.tsv"), delimiter="\t"))
    except FileNotFoundError:
        sc = []
    if sc:
        # the proxy's CPU-µs/req in the matching case (median over rounds), split by the profile's shares
        case_of = {"c50": "h1-c50", "rate": "rate"}
        title_of = {"c50": "the HTTP/1.1 50-connection load", "rate": "the fixed rate"}
        for load in ("c50", "rate"):
            rs = [r for r in sc if r["load"] == load]
            if not rs:
                continue
            print(f"\n### Where the time goes under {title_of[load]} (perf, 5 s runs)\n")
            print("| proxy | syscalls/req | most frequent syscalls, per req | context switches/req | page faults/req | kernel % of CPU | "
                  "libc % | own code % | kernel CPU-µs/req | user CPU-µs/req |\n"
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
            for r in rs:
                n = num(r["requests"])
                per = lambda k: fmt(num(r[k]) / n if n and num(r[k]) is not None else None, 2)
                k, lc = num(r["kernel_pct"]), num(r["libc_pct"])
                own = 100 - k - lc if k is not None and lc is not None else None
                c = median([num(by[(rnd, case_of[load], r["proxy"])]["cpu_us_per_req"]) for rnd in rounds
                            if (rnd, case_of[load], r["proxy"]) in by])
                print(f"| {r['proxy']} | {per('syscalls')} | {r['top_syscalls']} | {per('ctx_switches')} | {per('page_faults')} | "
                      f"{fmt(k, 1)} | {fmt(lc, 1)} | {fmt(own, 1)} | "
                      f"{fmt(c * k / 100 if c and k is not None else None, 1)} | "
                      f"{fmt(c * (100 - k) / 100 if c and k is not None else None, 1)} |")

if __name__ == "__main__":
    main()
