"""The pipeline's report: a Markdown page with the stages, the metrics beside those of the other
annotations of the same regions (the decoder alone, the gene model alone), and a PNG track plot. It
is given plain data (stage records, metrics, paths), not the pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .export.tracks import pybigwig, track_format
from .files import atomic_path, atomic_write
from .genome import Interval

PLOT_SPAN = 20_000
# The headline measures the annotations are compared on, per organism: (label, result keys). Eukaryotes
# are judged as gene finders are (nucleotide and exon level), prokaryotes by stop-exact genes too.
_MCC = (("strand-aware MCC", ("nucleotide", "coding", "mcc")),
        ("either-strand MCC", ("nucleotide", "coding_unstranded", "mcc")))
HEADLINES = {
    "prokaryote": _MCC + (("exact-gene F1", ("gene", "f1")), ("stop-exact gene F1", ("gene_stop", "f1"))),
    "eukaryote": _MCC + (("nucleotide CDS F1", ("nucleotide", "coding", "f1")), ("CDS exon F1", ("exon", "f1")),
                         ("exact-gene F1", ("gene", "f1"))),
}


def read_track_region(path: Path, name: str, start: int, end: int) -> np.ndarray:
    """Values of one track (bedGraph, or bigWig by its ``.bw`` / ``.bigwig`` suffix) over [start, end) of
    record ``name``, 0 where it has none."""
    if track_format(path) == "bedgraph":
        return read_bedgraph_region(path, name, start, end)
    track = pybigwig().open(str(path))
    try:
        if name not in track.chroms():
            return np.zeros(end - start, dtype=np.float32)
        values = np.asarray(track.values(name, start, min(end, track.chroms(name)), numpy=True), dtype=np.float32)
    finally:
        track.close()
    return np.nan_to_num(np.pad(values, (0, end - start - len(values))), nan=0.0)  # bigWig: NaN where no data


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
    """Reference CDS, predicted CDS (+ strand above, − below) and probability tracks over a region; without
    tracks (an annotation that did not run the tagger) the calls alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if tracks else 1
    fig, axes = plt.subplots(panels, 1, figsize=(12, 4.5 if tracks else 2.2), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1.4][:panels]})
    top, bottom = axes[0, 0], axes[-1, 0]  # the same axes when there are no tracks
    _feature_rows(top, reference, name, start, end, 1.0, "tab:blue")
    _feature_rows(top, prediction, name, start, end, 0.0, "tab:orange")
    top.set_yticks([0, 1], ["genoformer", "reference"])
    top.set_ylim(-0.5, 1.5)
    top.set_title(f"{name}:{start + 1:,}-{end:,}  (CDS; + strand upper bar, − strand lower bar)")
    bottom.set_xlabel(f"position on {name} (bp)")
    if tracks:
        x = np.arange(start, end)
        for label, values in tracks.items():
            bottom.plot(x, values, lw=0.8, label=label)
        bottom.set_ylim(0, 1.02)
        bottom.set_ylabel("probability")
        bottom.legend(loc="upper right", fontsize=8, ncol=len(tracks))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class RegionPlot:
    """What the track plot shows: reference and predicted CDS over ``region`` (its middle PLOT_SPAN bases)
    and per-base probability tracks (label -> bedGraph or bigWig path), with ``tracks_from`` naming the annotation that
    wrote them where it is not the plotted one (None: the plotted one)."""

    region: Interval
    reference: Path
    prediction: Path
    tracks: dict[str, Path]
    tracks_from: str | None = None


def _headline(result: dict, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _beats(model: float | None, alone: float | None) -> bool:
    """Whether the model's measure is better as printed; an undefined one (nothing called) is not."""
    return model is not None and (alone is None or round(model, 3) > round(alone, 3))


def network_against_others(label: str, model: dict, others: dict[str, dict],
                           organism: str = "prokaryote") -> list[str]:
    """Markdown lines: the ``organism``'s headline measures of the run's own annotation (``label``) and of each
    other annotation of the same regions (label -> results), and plainly whether the run's own beat each."""
    rows = {label: model, **others}
    measures = [(name, keys) for name, keys in HEADLINES[organism]
                if any(_headline(result, keys) is not None for result in rows.values())]
    lines = ["| annotation | " + " | ".join(name for name, _ in measures) + " |", "|---|" + "---|" * len(measures)]
    lines += [f"| {row} | " + " | ".join(_cell(_headline(result, keys)) for _, keys in measures) + " |"
              for row, result in rows.items()]
    lines.append("")
    if not measures:
        return lines + ["Neither annotation could be scored here (no reference genes in the regions).", ""]
    for other, result in others.items():
        scored = [(name, _headline(model, keys), _headline(result, keys)) for name, keys in measures]
        won = [name for name, m, a in scored if _beats(m, a)]
        lost = [name for name, m, a in scored if not _beats(m, a)]
        if all(a is None for _, _, a in scored):  # e.g. the fixed eukaryote decoder, given no evidence
            lines.append(f"The {other} called no genes here (every measure n/a): nothing to beat.")
        elif not lost:
            lines.append(f"**{label} beat the {other}** on every measure.")
        elif not won:
            lines.append(f"**{label} did not beat the {other}** on any measure.")
        else:
            lines.append(f"**{label} beat the {other} only on {', '.join(won)}**; not on "
                         f"{', '.join(lost)} (equal or worse).")
    return lines + [""]


def write_report(folder: Path, *, name: str, records: dict[str, dict], metrics: dict[str, dict], label: str,
                 others: dict[str, dict[str, dict]], outputs: list[str], organism: str = "prokaryote",
                 plot: RegionPlot | None = None) -> list[Path]:
    """Write ``folder``/report.md (and the plot's PNG); returns the paths written.

    ``records``: stage name -> its record (wall time, steps, metrics); ``metrics``: dataset -> evaluation
    results of the model's annotation (``label``: its name), ``others``: name -> dataset -> results for
    the other annotations of the same regions (e.g. the decoder run without a network), compared on the
    ``organism``'s headline measures; ``outputs``: the files to list."""
    from .evaluate import format_table
    from .genome import read_annotation

    lines = [f"# genoformer run `{name}`", ""]
    lines += ["## Stages", "", "| stage | wall time (s) | steps | final metrics |", "|---|---|---|---|"]
    for stage, rec in records.items():
        final = ", ".join(f"{k} {v:.4g}" for k, v in sorted(rec.get("metrics", {}).items())
                          if k.startswith("val/") and k.count("/") == 1)
        lines.append(f"| {stage} | {rec.get('seconds', '')} | {rec.get('steps', '')} | {final} |")
    starts = (records.get("start_network") or {}).get("start network")
    if (records.get("start_network") or {}).get("why"):
        lines += ["", f"No start network: {records['start_network']['why']}."]
    if starts:  # the start network's weight, chosen on the validation regions (decode/start_network.py)
        trials = starts["first right by weight"]
        lines += ["", f"Start network ({starts['steps']} steps): the annotated start ranks first in "
                      f"{trials[str(float(starts['weight']))]:.3f} of {starts['validation ORFs']} validation genes' reading "
                      f"frames at weight {starts['weight']:g}, against {trials['0.0']:.3f} for the start model alone."]
    paths = []
    if metrics:
        lines += ["", "## Held-out evaluation", ""]
        for dataset, result in metrics.items():
            lines += [f"### {dataset}", ""]
            compared = {other: scores[dataset] for other, scores in others.items() if dataset in scores}
            if compared:
                lines += ["The same regions annotated with less: without a network (`genoformer annotate --evidence "
                          "none`: the decoder with the same options, every base equally likely coding or not; or the "
                          "learned gene model alone, `--gene-model`), or with the start network alone (`--evidence "
                          "starts`, prokaryotes):", ""]
                lines += network_against_others(label, result, compared, organism)
            lines += [f"All levels, {label}:", "", format_table(result), ""]
    if plot is not None:
        region = plot.region
        start = region.start + max(0, (len(region) - PLOT_SPAN) // 2)
        end = min(region.end, start + PLOT_SPAN)
        tracks = {label: read_track_region(path, region.name, start, end) for label, path in plot.tracks.items()}
        png = plot_region(read_annotation(plot.reference), read_annotation(plot.prediction), tracks, region.name,
                          start, end, folder / "tracks.png")
        paths.append(png)
        lines += ["## A held-out region", "", f"![tracks]({png.name})", ""]
        if not tracks:
            lines += ["No probability tracks: this annotation wrote none (the tagger is not run where its evidence "
                      "weights are 0).", ""]
        elif plot.tracks_from:
            lines += [f"The calls are this run's own annotation; the probability tracks are the tagger's, from the "
                      f"\"{plot.tracks_from}\" annotation (the tagger is not run for the calls where its evidence "
                      "weights are 0).", ""]
    lines += ["## Outputs", ""]
    lines += [f"- `{item}`" for item in outputs]
    report = folder / "report.md"
    with atomic_write(report) as handle:
        handle.write("\n".join(lines) + "\n")
    return [report] + paths
