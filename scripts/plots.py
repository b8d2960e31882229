"""Draws BENCHMARKS.md's main comparisons as PNGs in docs/plots/, from the tables in
BENCHMARKS.md (each the output of the benchmark command its section gives).

    ./scripts/plots            # installs matplotlib into the test venv, then runs this

A section is found by the start of its heading; its first Markdown table is read. A table
missing or of another shape is an error naming the section.
"""

import re
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "plots"
HONEY, SLATE, SAGE, DUCK = "#e0a526", "#5a6b7d", "#7fa37f", "#b5651d"


def table(text: str, heading: str) -> list[list[str]]:
    """The first table below the `## heading…` section, as rows of cells (header row first)."""
    sections = re.split(r"^## ", text, flags=re.M)
    section = next((s for s in sections if s.startswith(heading)), None)
    if section is None:
        sys.exit(f"plots: no section of BENCHMARKS.md starts with {heading!r}")
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            break
    if len(rows) < 2:
        sys.exit(f"plots: the section {heading!r} holds no table")
    return rows


def number(cell: str) -> float:
    return float(re.sub(r"[^0-9.]", "", cell))


def bars(ax, labels, series, colors, ylabel):
    width = 0.8 / len(series)
    for i, ((name, values), color) in enumerate(zip(series, colors)):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name, color=color)
    ax.set_xticks(range(len(labels)), labels, rotation=0)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def save(fig, name):
    OUT.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(OUT / name, dpi=110)
    plt.close(fig)
    print(f"plots: docs/plots/{name}")


def tpch(text):
    rows = [r for r in table(text, "TPC-H SF1: Apiary frames")[1:] if r[0].startswith("q")]
    fig, ax = plt.subplots(figsize=(12, 4))
    bars(ax, [r[0] for r in rows],
         [("Apiary, clustered", [number(r[1]) for r in rows]),
          ("Apiary, plain", [number(r[2]) for r in rows]),
          ("DataFusion ListingTable", [number(r[3]) for r in rows]),
          ("DuckDB", [number(r[4]) for r in rows])],
         [HONEY, SAGE, SLATE, DUCK], "median time (ms)")
    ax.set_title("TPC-H SF1, per query: Apiary frames, ListingTable and DuckDB over the same data")
    save(fig, "tpch.png")


def selective(text):
    rows = table(text, "Selective scan")[1:]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars(ax, [f"{r[0]} {r[1]}" for r in rows],
         [("Apiary", [number(r[2]) for r in rows]),
          ("ListingTable", [number(r[3]) for r in rows])],
         [HONEY, SLATE], "median time (ms), log scale")
    ax.set_yscale("log")
    ax.set_title("1 % of a frame of 2,000 cells: cold and warm")
    save(fig, "selective.png")


def rss(text):
    head, *rows = table(text, "Peak memory of TPC-H SF1")
    fig, ax = plt.subplots(figsize=(11, 4))
    bars(ax, [r[0] for r in rows],
         [("bees, sort-merge joins", [number(r[1]) for r in rows]),
          ("bees, hash joins", [number(r[3]) for r in rows]),
          ("unbounded", [number(r[5]) for r in rows])],
         [HONEY, SAGE, SLATE], "peak RSS (MiB)")
    ax.axhline(512 + 49, color="#b00020", linestyle="--", linewidth=1)
    ax.text(len(rows) - 0.5, 512 + 49 + 8, "2 bees × 256 MiB + baseline", ha="right",
            color="#b00020", fontsize=8)
    ax.set_title("TPC-H SF1, peak resident memory per query (a fresh process each)")
    save(fig, "rss.png")


def swarm(text):
    rows = [r for r in table(text, "The swarm, 2026-12-06")[1:]
            if r[0] in ("q1", "q6")]
    fig, (ax, by_nodes) = plt.subplots(1, 2, figsize=(13, 4.5),
                                       gridspec_kw={"width_ratios": [3, 2]})
    labels = [r[0] + "\n" + "\n".join(textwrap.wrap(r[1], 16)) for r in rows]
    # Two nodes of one core, beside one node of two bees (the ceiling: no exchange at all),
    # where the row has it.
    at = range(len(rows))
    ax.bar([i - 0.2 for i in at], [number(r[4]) for r in rows], width=0.4, color=HONEY,
           label="2 nodes, one core each")
    ceiling = [(i, number(r[6])) for i, r in zip(at, rows) if len(r) > 6 and r[6]]
    ax.bar([i + 0.2 for i, _ in ceiling], [c for _, c in ceiling], width=0.4, color=SAGE,
           label="1 node of 2 bees (the two cores' ceiling)")
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.axhline(1.0, color=SLATE, linewidth=1)
    ax.axhline(1.8, color="#b00020", linestyle="--", linewidth=1)
    ax.text(len(rows) - 0.5, 1.82, "target 1.8×", ha="right", color="#b00020", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("speedup, 2 nodes over 1")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Speedup per query and way", fontsize=10)
    # Per node count: each query's time relative to one node, beside the ideal 1/n. This
    # machine has two cores, so two one-core nodes is the most it can measure.
    for r in rows:
        one, two = number(r[2]), number(r[3])
        by_nodes.plot([1, 2], [1.0, two / one], marker="o", linewidth=1,
                      label=r[0] + ", " + r[1])
    by_nodes.plot([1, 2], [1.0, 0.5], color=SLATE, linestyle=":", label="ideal (1/n)")
    by_nodes.set_xticks([1, 2])
    by_nodes.set_xlabel("nodes (one core each)")
    by_nodes.set_ylabel("time relative to one node")
    by_nodes.legend(fontsize=7, frameon=False)
    by_nodes.spines[["top", "right"]].set_visible(False)
    by_nodes.set_title("Time per node count", fontsize=10)
    fig.suptitle("The storage swarm: two one-core nodes against one (TPC-H SF1)")
    save(fig, "swarm.png")


def row_changes(text):
    rows = table(text, "Row-level changes beside delta-rs")[1:]
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [re.sub(r" \(.*\)", "", r[0]) for r in rows]
    bars(ax, labels,
         [("Apiary", [number(r[1]) for r in rows]),
          ("delta-rs", [number(r[2]) for r in rows])],
         [HONEY, SLATE], "median time (ms)")
    ax.set_title("Row-level changes of a 10 M-row table: Apiary vs delta-rs")
    save(fig, "row_changes.png")


def main():
    text = (ROOT / "BENCHMARKS.md").read_text()
    for plot in (tpch, selective, rss, swarm, row_changes):
        plot(text)


if __name__ == "__main__":
    main()
