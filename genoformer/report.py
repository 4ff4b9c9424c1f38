"""The pipeline's report: a Markdown page with the stages, the metrics beside the decoder alone's,
and a PNG track plot. It is given plain data (stage records, metrics, paths), not the pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_path, atomic_write
from .genome import Interval

PLOT_SPAN = 20_000
# The headline measures the network and the decoder alone are compared on: (label, result keys).
HEADLINE = (("strand-aware MCC", ("nucleotide", "coding", "mcc")),
            ("either-strand MCC", ("nucleotide", "coding_unstranded", "mcc")),
            ("exact-gene F1", ("gene", "f1")),
            ("stop-exact gene F1", ("gene_stop", "f1")))


def read_bedgraph_region(path: Path, name: str, start: int, end: int) -> np.ndarray:
    """Values of one bedGraph over [start, end) of record ``name`` (0 where no line covers)."""
    table = pd.read_csv(path, sep="\t", header=None, names=["chrom", "start", "end", "value"],
                        dtype={"chrom": str}, skiprows=_header_lines(path))
    table = table[(table["chrom"] == name) & (table["end"] > start) & (table["start"] < end)]
    values = np.zeros(end - start, dtype=np.float32)
    for s, e, v in zip(table["start"].clip(lower=start) - start, table["end"].clip(upper=end) - start, table["value"]):
        values[s:e] = v  # one slice per run of equal values, not per base
    return values


def _header_lines(path: Path) -> int:
    """How many ``track`` / ``browser`` / comment lines open a bedGraph (a record name may hold any letter)."""
    count = 0
    with open(path) as handle:
        for line in handle:
            if not line.startswith(("track ", "browser ", "#")):  # data lines are tab-separated
                break
            count += 1
    return count


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


@dataclass(frozen=True)
class RegionPlot:
    """What the track plot shows: reference and predicted CDS over ``region`` (its middle PLOT_SPAN bases)
    and per-base probability tracks (label -> bedGraph path)."""

    region: Interval
    reference: Path
    prediction: Path
    tracks: dict[str, Path]


def _headline(result: dict, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _beats(model: float | None, alone: float | None) -> bool:
    """Whether the model's measure is better as printed; an undefined one (nothing called) is not."""
    return model is not None and (alone is None or round(model, 3) > round(alone, 3))


def network_against_decoder(model: dict, alone: dict) -> list[str]:
    """Markdown lines: the headline measures of the model's annotation and the decoder alone's, and
    plainly whether the network beat the decoder alone on them."""
    measures = [(label, _headline(model, keys), _headline(alone, keys)) for label, keys in HEADLINE]
    measures = [m for m in measures if m[1] is not None or m[2] is not None]
    lines = ["| annotation | " + " | ".join(label for label, _, _ in measures) + " |",
             "|---|" + "---|" * len(measures),
             "| genoformer (network + decoder) | " + " | ".join(_cell(m) for _, m, _ in measures) + " |",
             "| decoder alone (no network) | " + " | ".join(_cell(a) for _, _, a in measures) + " |", ""]
    won = [label for label, m, a in measures if _beats(m, a)]
    lost = [label for label, m, a in measures if not _beats(m, a)]
    if not measures:
        lines.append("Neither annotation could be scored here (no reference genes in the regions).")
    elif not lost:
        lines.append("**The network beat the decoder alone** on every measure.")
    elif not won:
        lines.append("**The network did not beat the decoder alone** on any measure: these gene calls owe "
                     "nothing measurable to the network; the decoder's open-reading-frame rules and the "
                     "statistics it learns from the genome itself make them.")
    else:
        lines.append(f"**The network beat the decoder alone only on {', '.join(won)}**; not on "
                     f"{', '.join(lost)} (equal or worse).")
    return lines + [""]


def write_report(folder: Path, *, name: str, records: dict[str, dict], metrics: dict[str, dict],
                 decoder_alone: dict[str, dict], outputs: list[str], plot: RegionPlot | None = None) -> list[Path]:
    """Write ``folder``/report.md (and the plot's PNG); returns the paths written.

    ``records``: stage name -> its record (wall time, steps, metrics); ``metrics``: dataset -> evaluation
    results of the model's annotation, ``decoder_alone``: the same for the decoder run without a network
    on the same regions; ``outputs``: the files to list."""
    from .evaluate import format_table
    from .genome import read_annotation

    lines = [f"# genoformer run `{name}`", ""]
    lines += ["## Stages", "", "| stage | wall time (s) | steps | final metrics |", "|---|---|---|---|"]
    for stage, rec in records.items():
        final = ", ".join(f"{k} {v:.4g}" for k, v in sorted(rec.get("metrics", {}).items())
                          if k.startswith("val/") and k.count("/") == 1)
        lines.append(f"| {stage} | {rec.get('seconds', '')} | {rec.get('steps', '')} | {final} |")
    paths = []
    if metrics:
        lines += ["", "## Held-out evaluation", ""]
        for dataset, result in metrics.items():
            lines += [f"### {dataset}", ""]
            if dataset in decoder_alone:
                lines += ["The same decoder with the same options, given no network (every base equally likely "
                          "coding or not: `genoformer annotate --evidence none`), on the same regions:", ""]
                lines += network_against_decoder(result, decoder_alone[dataset])
            lines += ["All levels, genoformer (network + decoder):", "", format_table(result), ""]
    if plot is not None:
        region = plot.region
        start = region.start + max(0, (len(region) - PLOT_SPAN) // 2)
        end = min(region.end, start + PLOT_SPAN)
        tracks = {label: read_bedgraph_region(path, region.name, start, end) for label, path in plot.tracks.items()}
        png = plot_region(read_annotation(plot.reference), read_annotation(plot.prediction), tracks, region.name,
                          start, end, folder / "tracks.png")
        paths.append(png)
        lines += ["## A held-out region", "", f"![tracks]({png.name})", ""]
    lines += ["## Outputs", ""]
    lines += [f"- `{item}`" for item in outputs]
    report = folder / "report.md"
    with atomic_write(report) as handle:
        handle.write("\n".join(lines) + "\n")
    return [report] + paths
