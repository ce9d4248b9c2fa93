#!/usr/bin/env python3
"""Plots the `cpeers` table of a `make bench` run: throughput of Junction and
its peer per load, and p99 latency, each as the median with the spread of the
runs as an error bar.

    .build/release/junction-bench --only cpeers | tee bench.md
    python3 scripts/plot-bench.py bench.md Benchmarks/cpeers.png

Needs matplotlib (pip install matplotlib).
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CELL = re.compile(r"([\d,]+) \(([\d,]+)–([\d,]+)\)")


def number(text):
    return float(text.replace(",", ""))


def cell(text):
    """(median, low, high) of a cell like '189,651 (171,124–213,613)', or None."""
    match = CELL.search(text)
    if not match:
        return None
    return tuple(number(part) for part in match.groups())


def rows(path):
    """The cpeers table's rows: (load, junction, peer) with cells or None."""
    found = []
    inside = False
    for line in open(path, encoding="utf-8"):
        if line.startswith("## "):
            inside = "one C client" in line
        if not inside or not line.startswith("| ") or line.startswith("| load") or line.startswith("| ---"):
            continue
        parts = [part.strip() for part in line.strip().strip("|").split("|")]
        if len(parts) >= 3:
            found.append((parts[0], cell(parts[1]), cell(parts[2])))
    return found


def short(load):
    """A short label: the load's words before its comparison."""
    load = re.sub(r"`", "", load)
    always = "flush=always" in load and " vs " not in load
    load = re.split(r", Junction| vs |, msg/s|, µs", load)[0]
    load = load if len(load) <= 44 else load[:43] + "…"
    return load + (" (flush=always)" if always else "")


def bars(axis, loads, title, unit):
    labels = [short(load) for load, _, _ in loads]
    positions = range(len(loads))
    for offset, index, name in ((-0.2, 1, "Junction"), (0.2, 2, "peer")):
        medians, below, above = [], [], []
        for row in loads:
            value = row[index]
            medians.append(value[0] if value else 0)
            below.append(value[0] - value[1] if value else 0)
            above.append(value[2] - value[0] if value else 0)
        axis.bar([p + offset for p in positions], medians, 0.4, yerr=[below, above], capsize=3, label=name)
    axis.set_xticks(list(positions))
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
    axis.set_title(title)
    axis.set_ylabel(unit)
    axis.legend()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot-bench.py BENCH-OUTPUT.md OUT.png")
    table = rows(sys.argv[1])
    if not table:
        sys.exit(f"{sys.argv[1]}: no 'driven by one C client' table found")
    latency = [row for row in table if "µs" in row[0]]
    throughput = [row for row in table if "µs" not in row[0]]
    figure, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    bars(axes[0], throughput, "Throughput (median of 3, bars: lowest–highest)", "messages/s")
    bars(axes[1], latency, "Latency at 10,000 msg/s", "µs")
    figure.tight_layout()
    figure.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
