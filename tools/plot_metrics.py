#!/usr/bin/env python
"""Training curves from detectron2's ``metrics.json``: loss, learning rate and COCO AP/AR over iterations.

    python tools/plot_metrics.py output/quickstart                      # -> output/quickstart/metrics.png
    python tools/plot_metrics.py output/run_a output/run_b --output compare.png   # runs overlaid

Each argument is an ``OUTPUT_DIR`` or a ``metrics.json`` file (one JSON object per line,
as detectron2's ``JSONWriter`` writes them: training lines with ``total_loss``, ``lr``, ...;
evaluation lines with ``bbox/AP``, ``bbox/AP50``, ``bbox/AR@100``, ...). Lines without an
``iteration``, blank lines and a half-written last line are skipped; when a resumed run
logs an iteration again, the later value wins. Panels without data are left out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

logger = logging.getLogger(__name__)

# (panel title, y label, metric keys drawn in it, y scale: "log", "linear" or "percent" (0..))
PANELS = (
    ("loss", "loss", ("total_loss", "loss_seq"), "log"),
    ("learning rate", "lr", ("lr",), "linear"),
    ("COCO box AP / AR (val)", "%", ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/AR@100"), "percent"),
)


def metrics_file(path: str) -> str:
    """An OUTPUT_DIR or a metrics.json path -> the metrics.json path."""
    return os.path.join(path, "metrics.json") if os.path.isdir(path) else path


def read_metrics(path: str) -> list[dict]:
    """The JSON records of a metrics.json (or of an OUTPUT_DIR's), skipping lines that do not parse."""
    records = []
    with open(metrics_file(path)) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning(f"{path}:{number}: not JSON, skipped")
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Iterations and finite values of ``key`` (sorted by iteration; a repeated iteration keeps its last value)."""
    by_iteration = {}
    for record in records:
        value = record.get(key)
        if "iteration" in record and isinstance(value, (int, float)) and math.isfinite(value):
            by_iteration[int(record["iteration"])] = float(value)
    iterations = sorted(by_iteration)
    return iterations, [by_iteration[i] for i in iterations]


def plot_metrics(runs: dict[str, list[dict]], output: str, title: str = "") -> list[str]:
    """Draw the panels that have data for any run into one PNG; returns the panel titles drawn."""
    panels = [p for p in PANELS if any(series(records, k)[0] for records in runs.values() for k in p[2])]
    if not panels:
        raise ValueError(f"no loss, lr or bbox/AP values in {sorted(runs)}")
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    styles = ("-", "--", ":", "-.")
    all_iterations = [i for records in runs.values() for p in panels for k in p[2] for i in series(records, k)[0]]
    for ax, (panel_title, ylabel, keys, scale) in zip(axes, panels):
        for run_index, (run, records) in enumerate(runs.items()):
            for key_index, key in enumerate(keys):
                iterations, values = series(records, key)
                if not iterations:
                    continue
                label = key if len(runs) == 1 else f"{run}: {key}"
                few = len(iterations) < 20  # evaluations: a few points, marked, the last value in the legend
                if few:
                    label += f" = {values[-1]:.1f}" if abs(values[-1]) >= 1 else f" = {values[-1]:.3g}"
                ax.plot(iterations, values, label=label, color=f"C{key_index}", ls=styles[run_index % len(styles)],
                        marker="o" if few else None, markersize=4, linewidth=1.2)  # fmt: skip
        values = [v for records in runs.values() for k in keys for v in series(records, k)[1]]
        if scale == "log" and min(values) > 0:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
        elif scale == "percent":
            ax.set_ylim(0, max(100.0, max(values)) * 1.02)
        ax.set_xlim(min(0, min(all_iterations)), max(all_iterations) * 1.03 + 1)  # the same span in every panel
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    return [p[0] for p in panels]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs or metrics.json files")
    parser.add_argument("--output", help="PNG to write (default: metrics.png next to the first metrics.json)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs = {}
    for path in args.runs:
        name = os.path.basename(os.path.normpath(path if os.path.isdir(path) else os.path.dirname(path) or "."))
        while name in runs:
            name += "'"
        runs[name] = read_metrics(path)
    output = args.output or os.path.join(os.path.dirname(metrics_file(args.runs[0])) or ".", "metrics.png")
    panels = plot_metrics(runs, output, args.title)
    print(f"wrote {output} ({', '.join(panels)})")
    return output


if __name__ == "__main__":
    main()
