"""Draw benchmarks/servers.py's JSON results as one PNG (matplotlib).

One panel per section: median requests/s per server with the spread of the
runs (min to max) as error bars and the median server CPU time per request
as a label, and the RSS panel for the memory section.

    python benchmarks/plot.py                                   # latest results
    python benchmarks/plot.py results/servers-X.json -o out.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TITLES = {
    "pure": "Keep-alive hello, 64 connections",
    "blocking": "Handler with a 2 ms GIL-releasing blocking call",
    "spread": "greenpool spread modes (hello handler)",
    "tls": "TLS handshake + 1 request per connection",
    "memory": "RSS with idle keep-alive connections",
    "wsgi": "WSGI servers, one process on one core (bare app, Flask)",
}


def _color(label: str) -> str:
    if label.startswith("greenpool"):
        return "tab:green"
    if label.startswith("gevent"):
        return "tab:blue"
    if label.startswith("uvloop"):
        return "tab:purple"
    return "tab:gray"


def _throughput_panel(ax, name: str, section: dict) -> None:
    labels = list(section["configs"])
    rows = [section["configs"][label] for label in labels]
    medians = [row["median"] for row in rows]
    low = [m - min(row["samples"], default=m) for m, row in zip(medians, rows, strict=True)]
    high = [max(row["samples"], default=m) - m for m, row in zip(medians, rows, strict=True)]
    y = range(len(labels))
    ax.barh(y, medians, xerr=[low, high], color=[_color(label) for label in labels], capsize=3)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("requests/s (median, min-max)")
    ax.set_title(TITLES.get(name, name), fontsize=10)
    for i, (m, row) in enumerate(zip(medians, rows, strict=True)):
        if not math.isnan(m):
            cpu = row.get("cpu_us_median")
            note = f", {cpu:.1f} us CPU/req" if cpu is not None else ""
            ax.text(m + high[i], i, f"  {m:,.0f}{note}", va="center", fontsize=8)
    ax.set_xlim(right=max((m + h for m, h in zip(medians, high, strict=True)
                           if not math.isnan(m)), default=1) * 1.35)


def _memory_panel(ax, section: dict) -> None:
    labels = list(section["rows"])
    rss = [section["rows"][label]["rss_loaded_mib"] for label in labels]
    y = range(len(labels))
    ax.barh(y, rss, color=[_color(label) for label in labels])
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("RSS, MiB")
    ax.set_title(f"RSS with {section['connections']:,} idle keep-alive connections", fontsize=10)
    for i, label in enumerate(labels):
        per = section["rows"][label]["kib_per_connection"]
        ax.text(rss[i], i, f" {rss[i]:.0f} MiB ({per:.1f} KiB/conn)", va="center", fontsize=8)


def plot(results: dict, output: Path) -> Path:
    """Write the PNG for ``results`` (a servers.py JSON document) to ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = {k: v for k, v in results["sections"].items()
                if "skipped" not in v and ("configs" in v or "rows" in v)}  # not "profile"
    if not sections:
        raise SystemExit("nothing to plot: every section was skipped")
    heights = [max(2.0, 0.45 * len(v.get("configs") or v.get("rows")) + 1.0)
               for v in sections.values()]
    fig, axes = plt.subplots(
        len(sections), 1, figsize=(9, sum(heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (name, section) in zip(axes[:, 0], sections.items(), strict=True):
        if name == "memory":
            _memory_panel(ax, section)
        else:
            _throughput_panel(ax, name, section)
    machine = results["machine"]
    fig.suptitle(
        f"greenpool servers, {results['time']}: {machine['cpus']} CPUs, python "
        f"{machine['python']}, gevent {machine['gevent']} (medians; noisy on shared machines)",
        fontsize=9,
    )
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot benchmarks/servers.py results.")
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS / "servers-latest.json")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS / "servers.png")
    opts = parser.parse_args(argv)
    if not opts.results.exists():
        parser.error(f"{opts.results} not found; run benchmarks/servers.py first")
    out = plot(json.loads(opts.results.read_text()), opts.output)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
