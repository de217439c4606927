#!/usr/bin/env python3
"""Turn run.sh's results.tsv (and rss.tsv) into Markdown tables.

Usage: summarize.py RESULTS_DIR [MORE_RESULTS_DIRS...]

Given several runs' directories, it reads them as one run (rounds 1..,
101.., 201..): a lead of a few percent needs more slices than one run of
3 rounds gives to stand out of this VM's noise.

Prints one table per round, the cutover ratios per round, a summary table
(median over rounds), the paired slices of all rounds together, the
issue's performance goal read off them, the idle RSS table, the memory
cases (memory per connection at scale) and the request head each proxy
sent the backend.

cutover appears as two proxies when the run measured both builds: `cutover`
(the plain `cargo build --release`) and `cutover-pgo` (scripts/pgo-build.sh).
Each is compared with nginx and HAProxy, and the PGO build with the plain one.

"upstream conns opened" is how many connections the backend accepted during
a proxy's measured slices of a case (its stub_status): a proxy that keeps
its upstream connections opens none after its first slice; one that churns
them opens them all the time, and pays a handshake each time. For `direct`
they are the load generator's own connections.

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
PROXIES = ["direct", "nginx", "haproxy", "cutover", "cutover-pgo"]
# the builds of cutover, and what each is compared with
BUILDS = {"cutover": ("nginx", "haproxy"), "cutover-pgo": ("nginx", "haproxy", "cutover")}
BUILD_NAMES = {"cutover": "plain", "cutover-pgo": "PGO"}


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


def paired(raw, case, other, key, build="cutover"):
    """`build`'s ratio to `other` in each slice of `case`, over all rounds.

    A slice of cutover and the same slice of the other proxy ran back to
    back (run.sh takes slices in turn), so their ratio is as free of the
    machine's drift as this benchmark gets; the drift between slices is
    what the interval below is about.
    """
    at = {(r["round"], r.get("slice", "1"), r["proxy"]): num(r[key]) for r in raw if r["case"] == case}
    out = []
    for (rnd, sl, proxy), v in at.items():
        o = at.get((rnd, sl, other))
        if proxy == build and v and o:
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
    """{(build, case, other proxy, key): (geometric mean, low, high, slices won, slices)}.

    Computed once: the bootstrap is the slow part, and both the paired
    table and the goal read it.
    """
    out = {}
    for build, others in BUILDS.items():
        for case in cases:
            for other in others:
                for key, better in PAIRED_METRICS:
                    rs = paired(raw, case, other, key, build)
                    # at the fixed rate every proxy serves the rate: req/s tells nothing
                    if not rs or (case == "rate" and key == "rps"):
                        continue
                    won = sum(r > 1 if better == "higher" else r < 1 for r in rs)
                    out[(build, case, other, key)] = geomean_interval(rs) + (won, len(rs))
    return out


def print_paired(intervals, cases, title):
    """All rounds' slices together: is cutover ahead beyond the noise?"""
    lines = []
    for case in cases:
        for build, others in BUILDS.items():
            for other in others:
                cells = []
                for key, _ in PAIRED_METRICS:
                    found = intervals.get((build, case, other, key))
                    if found:
                        g, lo, hi, won, n = found
                        cells.append(f"{g:.3f} ({lo:.3f}–{hi:.3f}), {won} of {n}")
                    else:
                        cells.append("-")
                if any(c != "-" for c in cells):
                    lines.append(f"| {title(case)} | {build} | {other} | " + " | ".join(cells) + " |")
    if not lines:
        return
    print("\n### All rounds' slices, paired\n")
    print("Each cutover build's ratio to the other proxy in each slice: geometric mean over all slices of all "
          "rounds, its 95 % bootstrap interval, and in how many slices that build was better. An interval that "
          "does not include 1 is a difference beyond this machine's slice-to-slice noise.\n")
    print("| case | build | against | req/s ratio (higher is better) | CPU-µs/req ratio (lower is better) | "
          "p99 ratio (lower is better) |\n|---|---|---|---|---|---|")
    print("\n".join(lines))


def read_tsv(path):
    try:
        return list(csv.DictReader(open(path), delimiter="\t"))
    except FileNotFoundError:
        return []


def print_goal(intervals, out):
    """Issue 27's goal for each build, read off the paired slices.

    "Ahead" and "fewer" must hold beyond the noise (the whole interval on
    the right side of the bound); a case this run did not measure is left
    out. The memory lines come from rss.tsv and mem.tsv.
    """
    rss = {r["proxy"]: num(r["idle_kb"]) for r in read_tsv(f"{out}/rss.tsv")}
    mem = read_tsv(f"{out}/mem.tsv")
    idle = {r["proxy"]: num(r["kib_per_conn"]) for r in mem if r["case"] == "idle10k"}
    idle_h2 = {r["proxy"]: num(r["kib_per_conn"]) for r in mem if r["case"] == "idle10k-h2"}
    rows = []
    for build in BUILDS:
        name = BUILD_NAMES[build]
        for case, conns in (("h1-c50", "50 connections"), ("h1-c200", "200 connections")):
            for other in ("nginx", "haproxy"):
                found = intervals.get((build, case, other, "rps"))
                if found:
                    g, lo, hi, _, n = found
                    rows.append((f"{name}: more req/s than {other}, {conns}", f"{g:.3f}× ({lo:.3f}–{hi:.3f}), {n} slices", lo > 1))
        cpu = intervals.get((build, "rate", "nginx", "cpu_us_per_req"))
        if cpu:
            g, lo, hi, _, n = cpu
            rows.append((f"{name}: at most 0.9× nginx's CPU-µs/req at the fixed rate", f"{g:.3f}× ({lo:.3f}–{hi:.3f}), {n} slices", hi <= 0.9))
        if build == "cutover-pgo":
            for case in ("h1-c50", "h1-c200"):
                found = intervals.get((build, case, "cutover", "rps"))
                if found:
                    g, lo, hi, _, n = found
                    rows.append((f"PGO: more req/s than plain, {case}", f"{g:.3f}× ({lo:.3f}–{hi:.3f}), {n} slices", lo > 1))
        limit = 8 if build == "cutover" else 5
        if rss.get(build):
            mib = rss[build] / 1024
            rows.append((f"{name}: idle RSS under {limit} MiB", f"{mib:.2f} MiB", mib < limit))
        if idle.get(build) is not None:
            rows.append((f"{name}: at most 2 KiB per idle HTTP/1.1 connection", f"{idle[build]:.2f} KiB", idle[build] <= 2))
        if idle_h2.get(build) is not None:
            rows.append((f"{name}: at most 8 KiB per idle HTTP/2 connection", f"{idle_h2[build]:.2f} KiB", idle_h2[build] <= 8))
    if not rows:
        return
    print("\n### The performance goal (issue 27)\n")
    print("From the paired slices above: \"more\" holds when the whole 95 % interval is above 1, "
          "\"at most\" when the whole interval is at or under the bound.\n")
    print("| goal | measured | holds |\n|---|---|---|")
    for goal, measured, holds in rows:
        print(f"| {goal} | {measured} | {'yes' if holds else '**no**'} |")


def print_memory_cases(out):
    """The memory cases (run.sh MEM_CASES): memory per connection at scale."""
    rows = read_tsv(f"{out}/mem.tsv")
    if not rows:
        return
    print("\n### Memory per connection (memory cases)\n")
    print("idle10k: each connection sent one request, then sat idle; RSS read 2 s after the last answer "
          "(idle10k-h2: the same over h2c, one stream per connection). "
          "rate10k: each connection sends one request a second; RSS at the end of the measured window, "
          "CPU over it. KiB/conn = (RSS after − RSS before) ÷ connections answered. Requests measured well "
          "under connections × seconds mean the load core did not keep up (or requests queued): the figures "
          "are then not those of the rate; many upstream connections opened mean requests piled up beyond a "
          "proxy's idle pool.\n")
    print("| case | proxy | connections (answered) | errors | RSS before MiB | RSS after MiB | KiB/conn | "
          "requests measured (of conns × s) | proxy CPU-µs/req | proxy CPU % | upstream conns opened |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b, a = num(r["rss_before_kb"]), num(r["rss_after_kb"])
        expected = num(r.get("expected"))
        requests = fmt(num(r["requests"])) + (f" ({fmt(expected)})" if expected else "")
        print(f"| {r['case']} | {r['proxy']} | {fmt(num(r['conns']))} ({fmt(num(r['answered']))}) | {r['errors']} | "
              f"{fmt(b / 1024 if b else None, 1)} | {fmt(a / 1024 if a else None, 1)} | {fmt(num(r['kib_per_conn']), 2)} | "
              f"{requests} | {fmt(num(r['cpu_us_per_req']), 1)} | {fmt(num(r['cpu_pct']))} | {r['upstream_opened']} |")


def print_headers(out):
    """What each proxy sent the backend for the same request (headers.txt)."""
    try:
        lines = open(f"{out}/headers.txt").read().splitlines()
    except FileNotFoundError:
        return
    seen = defaultdict(dict)  # (proxy, protocol) -> {header name: value}
    order = []
    key = None
    for line in lines:
        if line.startswith("== "):
            key = tuple(line[3:].split(" ", 1))
            order.append(key)
        elif key and ":" in line:
            name, value = line.split(":", 1)
            seen[key][name.strip().lower()] = value.strip()
        elif key:
            seen[key]["(request line)"] = line.strip()
    if not order:
        return
    names = []
    for k in order:
        for n in seen[k]:
            if n not in names:
                names.append(n)
    print("\n### Request head each proxy sent the backend\n")
    print("One `curl` request (`GET /headers?x=1`) through each proxy, as the backend (a header echo) saw it; "
          "\"—\" = not sent. The forwarding headers must match for the comparison to be like for like.\n")
    print("| header | " + " | ".join(f"{p} ({proto})" for p, proto in order) + " |")
    print("|---|" + "---|" * len(order))
    for n in names:
        print(f"| {n} | " + " | ".join(f"`{seen[k][n]}`" if n in seen[k] else "—" for k in order) + " |")


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
    opened = [r.get("upstream_opened", "-") for r in slices]
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
        # "-" when a reading failed or the run predates the column
        "upstream_opened": sum(int(v) for v in opened) if all(v.isdigit() for v in opened) else None,
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
    builds = [b for b in BUILDS if any(r["proxy"] == b for r in rows)]
    # per slice: did each build beat the other proxy (more req/s, less CPU per request)?
    slice_rows = {(int(r["round"]), r["case"], r["proxy"], r.get("slice", "1")): r for r in raw}
    ahead = defaultdict(lambda: [0, 0, 0, 0])  # (build, round, case, other) -> rps ahead, rps n, cpu ahead, cpu n
    for (rnd, case, proxy, sl), r in slice_rows.items():
        if proxy not in BUILDS:
            continue
        for other in BUILDS[proxy]:
            o = slice_rows.get((rnd, case, other, sl))
            if not o:
                continue
            count = ahead[(proxy, rnd, case, other)]
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

    def opened(v):
        return "-" if v is None else fmt(v)

    header = ("| case | proxy | req/s | p50 ms | p99 ms | proxy CPU-µs/req | proxy CPU % | errors | upstream conns opened | "
              "machine busy % before | other load % during |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    # ratios[build][case][metric][other] = list over rounds
    ratios = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
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
                      f"{r['errors']} | {opened(r['upstream_opened'])} | {r['busy_pct']} | {fmt(num(r.get('other_pct')))} |")
            for build in builds:
                c = by.get((rnd, case, build))
                for other in BUILDS[build]:
                    o = by.get((rnd, case, other))
                    if c and o:
                        ratios[build][case]["rps"][other].append(ratio(num(c["rps"]), num(o["rps"])))
                        ratios[build][case]["cpu"][other].append(ratio(num(c["cpu_us_per_req"]), num(o["cpu_us_per_req"])))
        for build in builds:
            others = BUILDS[build]
            print(f"\n{build} ({BUILD_NAMES[build]} build) ratios, round {rnd} (req/s: higher is better for {build}; "
                  "CPU-µs/req: lower is better):\n")
            print("| case | " + " | ".join(f"req/s ÷ {o}" for o in others) + " | " + " | ".join(f"CPU/req ÷ {o}" for o in others)
                  + f" | slices with more req/s than {' / '.join(others)} | slices with less CPU/req than {' / '.join(others)} |")
            print("|---|" + "---:|" * (2 * len(others) + 2))
            for case in cases:
                vals = [ratios[build][case][m][o][-1] if len(ratios[build][case][m][o]) == rounds.index(rnd) + 1 else None
                        for m in ("rps", "cpu") for o in others]
                counts = [ahead.get((build, rnd, case, o)) for o in others]
                won = lambda i: " / ".join(f"{c[i]} of {c[i + 1]}" if c and c[i + 1] else "-" for c in counts)
                print(f"| {title(case)} | " + " | ".join(fmt(v, 2) for v in vals) + f" | {won(0)} | {won(2)} |")

    print(f"\n### Summary: median over {len(rounds)} round(s)\n")
    print("| case | proxy | req/s | p50 ms | p99 ms | proxy CPU-µs/req | proxy CPU % | errors (sum) | "
          "upstream conns opened (sum) | other load % (max) |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        for proxy in PROXIES:
            rs = [by[(rnd, case, proxy)] for rnd in rounds if (rnd, case, proxy) in by]
            if not rs:
                continue
            med = {k: median([num(r[k]) for r in rs]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "cpu_pct")}
            errs = sum(int(r["errors"]) for r in rs if r["errors"].isdigit())
            others = [r["other_pct"] for r in rs if r["other_pct"] is not None]
            ups = [r["upstream_opened"] for r in rs]
            print(f"| {title(case)} | {proxy} | {fmt(med['rps'])} | {fmt(med['p50_ms'], 3)} | {fmt(med['p99_ms'], 3)} | "
                  f"{fmt(med['cpu_us_per_req'], 1)} | {fmt(med['cpu_pct'])} | {errs} | "
                  f"{opened(None if None in ups else sum(ups))} | {fmt(max(others) if others else None)} |")

    for build in builds:
        others = BUILDS[build]
        print(f"\n{build}'s ({BUILD_NAMES[build]} build) ratios, per round (r1 / r2 / ...) and their median:\n")
        print("| case | " + " | ".join(f"req/s ÷ {o}" for o in others) + " | " + " | ".join(f"CPU-µs/req ÷ {o}" for o in others)
              + " |\n|---|" + "---|" * (2 * len(others)))
        for case in cases:
            cells = []
            for m in ("rps", "cpu"):
                for o in others:
                    vs = ratios[build][case][m][o]
                    per = " / ".join(fmt(v, 2) for v in vs)
                    cells.append(f"{per} → **{fmt(median(vs), 2)}**" if len(vs) > 1 else fmt(median(vs), 2))
            print(f"| {title(case)} | " + " | ".join(cells) + " |")

    intervals = paired_intervals(raw, cases)
    print_paired(intervals, cases, title)
    print_goal(intervals, out)

    rss = read_tsv(f"{out}/rss.tsv")
    if rss:
        print("\n### Memory (RSS, summed over the proxy's processes)\n")
        print("| proxy | processes | idle RSS MiB (after start, before load) | RSS MiB after all rounds |\n|---|---:|---:|---:|")
        for r in rss:
            idle = num(r["idle_kb"])
            after = num(r["after_kb"])
            print(f"| {r['proxy']} | {r['procs']} | {fmt(idle / 1024 if idle else None, 1)} | "
                  f"{fmt(after / 1024 if after else None, 1)} |")
    print_memory_cases(out)
    print_headers(out)

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
