#!/usr/bin/env python3
"""Paired reading of paired_ab.sh's slices.

Usage: paired.py slices.tsv BASE OTHER COLUMN...

For each COLUMN (a per-slice figure such as cpu_us_per_req or p99_ms),
pairs OTHER's slice with BASE's slice of the same round (they ran back to
back, in alternating order) and prints each round's ratio OTHER / BASE,
then over all rounds: the median ratio, the lowest and highest, the
geometric mean with a seeded 95 % bootstrap interval, and in how many
rounds OTHER came out above BASE. A ratio whose interval contains 1 is
within the noise of the run.
"""

import csv
import math
import random
import statistics
import sys


def main() -> None:
    path, base, other, *columns = sys.argv[1:]
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    rounds = sorted({int(r["round"]) for r in rows})
    by = {(int(r["round"]), r["proxy"]): r for r in rows}
    for column in columns:
        pairs = []
        for rnd in rounds:
            a, b = by.get((rnd, base)), by.get((rnd, other))
            try:
                x, y = float(a[column]), float(b[column])
            except (TypeError, ValueError):
                continue
            if x > 0 and y > 0:
                pairs.append((rnd, x, y))
        print(f"== {column}: {other} / {base}")
        print("round\t" + base + "\t" + other + "\tratio")
        for rnd, x, y in pairs:
            print(f"{rnd}\t{x:.3f}\t{y:.3f}\t{y / x:.3f}")
        if not pairs:
            print("no pairs")
            continue
        ratios = [y / x for _, x, y in pairs]
        logs = [math.log(r) for r in ratios]
        rng = random.Random(1)
        means = sorted(
            math.exp(statistics.fmean(rng.choice(logs) for _ in logs)) for _ in range(10000)
        )
        lo, hi = means[249], means[9749]
        above = sum(r > 1 for r in ratios)
        print(
            f"median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
            f"geometric mean {math.exp(statistics.fmean(logs)):.3f}, 95% interval {lo:.3f}-{hi:.3f}; "
            f"{other} above {base} in {above} of {len(ratios)} rounds; "
            f"means {statistics.fmean(x for _, x, _ in pairs):.3f} vs {statistics.fmean(y for _, _, y in pairs):.3f}"
        )


if __name__ == "__main__":
    main()
