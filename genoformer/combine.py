"""Fitting how much a network's evidence counts in a decoder's scores, on validation regions.

Eukaryotes: ``genoformer combine`` and the pipeline run :func:`fit_evidence`: the network predicts its
per-base class probabilities over validation regions, :func:`genoformer.genemodel.fit_evidence_weights`
searches the weights that score best there against the annotation, and the weights are written as JSON
beside the gene model (``evidence_weights.json``), where ``genoformer annotate --model M --gene-model G``
finds them::

    fit = fit_evidence("runs/x/finetune/model", "runs/x/gene_model", "genome.fa", "genome.gff3", "val.bed")
    fit.weights, fit.scores  # EvidenceWeights(cds=..., intron=..., cap=...), the validation F1s

Prokaryotes: ``genoformer start-network`` and the pipeline's ``start_network`` stage run
:func:`add_start_network`: a start-site network trained on the training regions' genes, its weight beside
the model folder's start model chosen on the validation regions'
(:func:`genoformer.decode.start_network.fit_start_network`), written into the model folder, where
``genoformer annotate --model M`` finds it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .decode.start_network import DEFAULT_STEPS, StartNetwork, fit_start_network
from .decode.start_sites import region_genes
from .genemodel import EvidenceFit, GeneModel, fit_evidence_weights
from .genemodel.evidence import WEIGHTS_FILE


@dataclass
class FittedEvidence(EvidenceFit):
    """An :class:`~genoformer.genemodel.EvidenceFit` and where its weights were written."""

    path: Path | None = None


def fit_evidence(model, gene_model, fasta: str | Path, annotation, regions, *, out: str | Path | None = None,
                 window_length: int | None = None, batch_size: int = 8, both_strands: bool = True,
                 device: str = "auto", grid: dict | None = None,
                 progress: Callable[[str], None] | None = None) -> FittedEvidence:
    """Fit and write the weights of ``model``'s evidence (a tagging model folder or ``load_model`` result;
    None: none, only the gene model's site network is weighed in) in ``gene_model``'s scores (a folder or
    :class:`~genoformer.genemodel.GeneModel`) on ``regions`` (a BED path or Intervals) of ``fasta``,
    scored against ``annotation`` (a path or ``read_annotation`` table). ``out``: the weights file
    (default: the gene model folder's ``evidence_weights.json``; needed when ``gene_model`` is an
    object). Prediction options are ``annotate_genome``'s; ``grid``
    :func:`~genoformer.genemodel.fit_evidence_weights`'s."""
    from .annotate import TaggingModel, _device, decoder_alone, genome_stretches, load_model
    from .genome import Genome, read_annotation
    from .predict import predict_record

    if out is None:
        if isinstance(gene_model, GeneModel):
            raise ConfigError("give the weights file to write (out=) when the gene model is an object, not a folder")
        out = Path(gene_model) / WEIGHTS_FILE
    if not isinstance(gene_model, GeneModel):
        gene_model = GeneModel.load(gene_model)
    genome = Genome(fasta)
    stretches = genome_stretches(genome, fasta, regions=regions)
    table = annotation if not isinstance(annotation, (str, Path)) else read_annotation(annotation)
    if model is None:
        if gene_model.site_model is None:
            raise ConfigError("nothing to combine: give a tagging model (--model), or a gene model with a site "
                              "network (`genoformer gene-model --site-network-steps N`)")
        model, probabilities = decoder_alone("eukaryote"), None
    else:
        if not isinstance(model, TaggingModel):
            model = load_model(model)
        if model.scheme.kind != "gene_structure" or "CDS" not in model.scheme.classes:
            raise ConfigError(f"combining with a gene model needs a gene-structure tagging model with a CDS class; "
                              f"this one's classes are {list(model.scheme.classes)}")
        window = window_length or model.window_length
        if window < max(model.tokenizer.k, 1):
            raise ConfigError(f"window length {window} is below the model's minimum ({model.tokenizer.k} bases); "
                              "set the window length")
        dev = _device(device)
        model.network.to(dev)

        def probabilities(iv):  # (2, classes, len(iv))
            return predict_record(model.network, genome, iv.name, model.tokenizer, model.scheme.n_classes,
                                  window_length=window, start=iv.start, end=iv.end, batch_size=batch_size,
                                  both_strands=both_strands, device=dev)

    fit = fit_evidence_weights(genome, table, stretches, gene_model, probabilities, model.scheme.classes,
                               grid=grid, progress=progress)
    path = fit.weights.save(out, fit.record(stretches, gene_model))
    return FittedEvidence(weights=fit.weights, scores=fit.scores, trials=fit.trials, path=path)


def add_start_network(model: str | Path, sources, *, steps: int = DEFAULT_STEPS, progress: Callable[[str], None] | None = None) -> StartNetwork:
    """Train a start network for the prokaryote tagging model folder ``model`` and write it there (replacing
    one trained before). ``sources``: (fasta, annotation, training regions, validation regions) of each genome,
    annotation a path or ``read_annotation`` table, regions Intervals or a BED path."""
    from .annotate import genome_stretches, load_model
    from .genome import Genome, read_annotation
    from .model.site_model import SiteTraining

    tagging = load_model(model, start_network=False)  # one there already (even a broken one) is replaced
    if tagging.start_model is None:
        raise ConfigError(f"{model}: the model folder has no start model (prokaryote gene structures, learnt when "
                          "fine-tuning on an annotation): the start network is weighed beside it")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"start network steps must be an integer >= 1, got {steps!r}")
    train, validation = [], []
    for fasta, annotation, train_regions, val_regions in sources:
        genome = Genome(fasta)
        table = annotation if not isinstance(annotation, (str, Path)) else read_annotation(annotation)
        train += region_genes(genome, table, genome_stretches(genome, fasta, regions=train_regions))
        validation += region_genes(genome, table, genome_stretches(genome, fasta, regions=val_regions))
    network = fit_start_network(train, validation, tagging.start_model, training=SiteTraining(steps=steps),
                                progress=progress)
    network.save(model)
    return network
