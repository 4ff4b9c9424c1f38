"""The pipeline's report: a Markdown page with the metrics, timings and a PNG track plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .files import atomic_path, atomic_write

if TYPE_CHECKING:
    from .pipeline import Pipeline

PLOT_SPAN = 20_000


def read_bedgraph_region(path: Path, name: str, start: int, end: int) -> np.ndarray:
    """Values of one bedGraph over [start, end) of record ``name`` (0 where no line covers)."""
    table = pd.read_csv(path, sep="\t", comment="t", header=None, names=["chrom", "start", "end", "value"])
    table = table[(table["chrom"] == name) & (table["end"] > start) & (table["start"] < end)]
    values = np.zeros(end - start, dtype=np.float32)
    for s, e, v in zip(table["start"].clip(lower=start) - start, table["end"].clip(upper=end) - start, table["value"]):
        values[s:e] = v  # one slice per run of equal values, not per base
    return values


def _feature_rows(ax, table: pd.DataFrame, name: str, start: int, end: int, y: float, color: str) -> None:
    rows = table[(table["seqid"] == name) & (table["type"] == "CDS") & (table["end"] > start) & (table["start"] < end)]
    for _, row in rows.iterrows():
        offset = 0.15 if row["strand"] == "+" else -0.15
        ax.broken_barh([(row["start"], row["end"] - row["start"])], (y + offset - 0.1, 0.2), color=color)


def plot_region(reference: pd.DataFrame, prediction: pd.DataFrame, tracks: dict[str, np.ndarray],
                name: str, start: int, end: int, path: Path) -> Path:
    """Reference CDS, predicted CDS (+ strand above, − below) and probability tracks over a region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    _feature_rows(top, reference, name, start, end, 1.0, "tab:blue")
    _feature_rows(top, prediction, name, start, end, 0.0, "tab:orange")
    top.set_yticks([0, 1], ["genoformer", "reference"])
    top.set_ylim(-0.5, 1.5)
    top.set_title(f"{name}:{start + 1:,}-{end:,}  (CDS; + strand upper bar, − strand lower bar)")
    x = np.arange(start, end)
    for label, values in tracks.items():
        bottom.plot(x, values, lw=0.8, label=label)
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("probability")
    bottom.set_xlabel(f"position on {name} (bp)")
    bottom.legend(loc="upper right", fontsize=8, ncol=len(tracks))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(pipeline: "Pipeline", folder: Path) -> list[Path]:
    from .evaluate import format_table
    from .genome import read_annotation, read_bed_regions

    config, out = pipeline.config, pipeline.out
    records = {s: json.loads(pipeline.record_path(s).read_text())
               for s in ("pretrain", "finetune", "annotate", "evaluate") if pipeline.record_path(s).is_file()}
    lines = [f"# genoformer run `{config['name']}`", ""]
    lines += ["## Stages", "", "| stage | wall time (s) | steps | final metrics |", "|---|---|---|---|"]
    for stage, rec in records.items():
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(rec.get("metrics", {}).items())
                            if k.startswith("val/") and k.count("/") == 1)
        lines.append(f"| {stage} | {rec.get('seconds', '')} | {rec.get('steps', '')} | {metrics} |")
    metrics_path = out / "evaluate" / "metrics.json"
    paths = []
    if metrics_path.is_file():
        results = json.loads(metrics_path.read_text())
        lines += ["", "## Held-out evaluation", ""]
        for dataset, result in results.items():
            lines += [f"### {dataset}", "", format_table(result), ""]
    regions = read_bed_regions(config["data"]["test_regions"]) if config["data"]["test_regions"] else []
    prediction_path = out / "annotate" / "genome0.gff3"
    if regions and prediction_path.is_file() and config["data"]["annotation"]:
        first = regions[0]
        start = first.start + max(0, (len(first) - PLOT_SPAN) // 2)
        end = min(first.end, start + PLOT_SPAN)
        tracks = {}
        for strand, sign in (("plus", "+"), ("minus", "−")):
            track = out / "annotate" / f"genome0.CDS.{strand}.bedgraph"
            if track.is_file():
                tracks[f"P(CDS {sign})"] = read_bedgraph_region(track, first.name, start, end)
        png = plot_region(read_annotation(config["data"]["annotation"][0]), read_annotation(prediction_path),
                          tracks, first.name, start, end, folder / "tracks.png")
        paths.append(png)
        lines += ["## A held-out region", "", f"![tracks]({png.name})", ""]
    lines += ["## Outputs", ""]
    for stage in ("finetune", "annotate", "evaluate"):
        for item in records.get(stage, {}).get("outputs", []):
            lines.append(f"- `{item}`")
    report = folder / "report.md"
    with atomic_write(report) as handle:
        handle.write("\n".join(lines) + "\n")
    return [report] + paths
