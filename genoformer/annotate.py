"""Annotating a genome: FASTA + tagging model -> per-base probabilities -> decoded genes -> GFF3, BED, tracks.

``genoformer annotate``, the pipeline's annotate stage and the Python API (``genoformer.load_model``,
``genoformer.annotate_genome``) all run :func:`annotate_genome`::

    model = genoformer.load_model("runs/ecoli/finetune/model")
    result = genoformer.annotate_genome(model, "genome.fa", "out/genome")
    result.features  # the called genes, a table like read_annotation's; result.paths: the files written

With ``evidence="none"`` no network is run: every base gets the probabilities that tell the gene
decoder nothing (:func:`uninformative_probabilities`), so the genes come from its ORF, signal and
self-trained rules alone. That is the ablation a model's scores should be read against.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .decode import StartModel, Stretch, decode_stretches, gene_decoder_options, self_trains
from .decode.start_network import StartNetwork
from .errors import ConfigError, InputFileError
from .files import exclusive_lock
from .genemodel import EvidenceWeights, GeneModel, combined_evidence, decode_with_gene_model
from .genome import Genome, Interval, LabelScheme

# network: the model folder's networks (tagger, and a prokaryote start network); starts: its start network
# alone, the tagger not run; none: no network, the gene decoder alone.
EVIDENCE = ("network", "starts", "none")
NO_START_NETWORK = ("evidence 'starts' needs a prokaryote model folder with a start network (`genoformer start-network`, "
                    "or the pipeline's start_network stage)")
TRACK_STRANDS = (("plus", "+"), ("minus", "-"))  # track file names and signs, + strand row first


@dataclass(frozen=True)
class TaggingModel:
    """What annotation needs of a model: its label scheme and gene rules, and (unless it stands for the
    decoder alone) the network and tokenizer. ``loss`` is the fine-tuning loss, which sets the
    prokaryote decoder's default gene cost; ``window_length`` the training window (0: unknown)."""

    scheme: LabelScheme
    organism: str
    loss: str | None = None
    window_length: int = 0
    network: Any = None  # a ReformerTagger in eval mode; None: no network
    tokenizer: Any = None
    start_model: StartModel | None = None  # where prokaryote genes start, learnt from the training annotation
    start_network: StartNetwork | None = None  # a network's evidence on the same, weighed beside the start model


@dataclass(frozen=True)
class Annotation:
    """One annotation run: the files written (``gff3``, ``bed``, ``CLASS.plus``/``CLASS.minus`` tracks)
    and the called features (gene -> mRNA -> exon/CDS rows, record coordinates, 0-based half-open)."""

    paths: dict[str, Path]
    features: pd.DataFrame


def load_model(folder: str | Path, start_network: bool = True) -> TaggingModel:
    """The tagging model in a model folder written by training (``genoformer export`` or the pipeline), with
    the start network trained into it, if any (``start_network`` False: without reading one)."""
    from .model.io import CONFIG_FILE
    from .model.networks import ReformerTagger, load_network

    network, pretrained = load_network(folder)
    if pretrained.task != ReformerTagger.task:
        raise InputFileError(folder, f"is a {pretrained.task!r} model; annotation needs a tagging model")
    head = pretrained.head
    start_model = None
    if "start_model" in head:
        try:
            start_model = StartModel.from_dict(head["start_model"])
        except ValueError as error:
            raise InputFileError(Path(folder) / CONFIG_FILE, f"has a broken start model ({error}); export the "
                                                             "model again from its checkpoint") from None
    return TaggingModel(scheme=LabelScheme.from_dict(head["scheme"]), organism=head.get("organism", "prokaryote"),
                        loss=head.get("loss"), window_length=int(head.get("window_length") or 0),
                        network=network, tokenizer=pretrained.tokenizer, start_model=start_model,
                        start_network=StartNetwork.load(folder) if start_network else None)


def decoder_alone(organism: str) -> TaggingModel:
    """No model: the default gene-structure classes and ``organism``'s decoder with its default options."""
    return TaggingModel(scheme=LabelScheme.gene_structure(), organism=organism)


def uninformative_probabilities(scheme: LabelScheme, organism: str, length: int) -> np.ndarray:
    """Probabilities ``(2, classes, length)`` under which every choice the gene decoder makes per base is
    even: no evidence. The prokaryote decoder reads P(CDS) against the rest, so P(CDS) = P(intergenic) =
    0.5 on both strands. The eukaryote decoder scores CDS and intron each against everything else
    (outside), and within the outside the UTRs against intergenic, so CDS, intron and outside get a
    third each (the outside's shared evenly by intergenic and the UTR classes). ncRNA gets 0: it is
    segmented where it beats every class, which no evidence must not make it do."""
    if scheme.kind != "gene_structure" or "CDS" not in scheme.classes:
        raise ConfigError(f"annotating without a network needs a gene-structure model with a CDS class; "
                          f"this one's classes are {list(scheme.classes)}")
    classes = scheme.classes
    if organism == "prokaryote":
        inside, outside = ["CDS"], ["intergenic"]
    else:
        inside = [c for c in ("CDS", "intron") if c in classes]
        outside = [c for c in ("intergenic", "five_prime_UTR", "three_prime_UTR") if c in classes]
    column = np.zeros(len(classes), dtype=np.float32)
    share = 1.0 / (len(inside) + 1)
    for name in inside:
        column[classes.index(name)] = share
    for name in outside:
        column[classes.index(name)] = share / len(outside)
    return np.broadcast_to(column[None, :, None], (2, len(classes), length))


def _progress(total: int, desc: str):
    """A progress bar on stderr (tqdm comes with Lightning); returns an update(n) callable and closer."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="bp", unit_scale=True, file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty())
    return bar.update, bar.close


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _gene_model(gene_model, organism: str | None):
    """The learned gene model to call genes with, checked against the organism; and the organism."""
    if organism not in (None, "eukaryote"):
        raise ConfigError(f"a learned gene model calls eukaryotic genes (exons and introns); got organism {organism!r}")
    return (gene_model if isinstance(gene_model, GeneModel) else GeneModel.load(gene_model)), "eukaryote"


def _evidence_weights(weights, gene_model_folder, gene_model: GeneModel, evidence: str):
    """The weights of the network's evidence in ``gene_model``'s scores (``evidence`` "network"): given, read
    from a file, or the gene model folder's ``evidence_weights.json`` (a file must have been fitted for it)."""
    if evidence == "none":
        return None
    if isinstance(weights, EvidenceWeights):
        return weights
    if weights is None and gene_model_folder is None:
        raise ConfigError("a gene model given as an object needs its evidence weights (evidence_weights=) to combine "
                          "it with a network")
    return EvidenceWeights.load(weights if weights is not None else gene_model_folder, gene_model)


def _stretch(genome: Genome, iv: Interval) -> Stretch:
    """A predicted stretch for the decoder. IDs are numbered per stretch, so a stretch that is not its
    whole record names itself in them (``chr1:1001-5000.g3``): several regions of one record must not
    share IDs."""
    whole = (iv.start, iv.end) == (0, genome.lengths[iv.name])
    return Stretch(iv.name, iv.start, None if whole else f"{iv.name}:{iv.start + 1}-{iv.end}")


def genome_stretches(genome: Genome, fasta, records=None, regions=None) -> list[Interval]:
    """The stretches of ``genome`` to work on: the ``regions`` (a BED path or Intervals, checked against the
    genome), else the ``records`` (default: all) whole; grouped by record (in order of each record's first stretch)."""
    from .genome import read_bed_regions

    if regions is not None:
        stretches = regions if isinstance(regions, list) else read_bed_regions(regions)
        for iv in stretches:
            genome.validate_interval(iv.name, iv.start, iv.end)
        order = {name: i for i, name in reversed(list(enumerate(iv.name for iv in stretches)))}
        return sorted(stretches, key=lambda iv: order[iv.name])  # stable: a record's regions keep their order
    names = records if records else genome.names
    for name in names:
        if name not in genome.lengths:
            raise InputFileError(fasta, f"no record named {name!r} (records: {', '.join(genome.names[:5])}...)")
    return [Interval(name, 0, genome.lengths[name]) for name in names]


def _by_record(stretches: list[Interval]) -> Iterator[tuple[str, list[Interval]]]:
    name, group = None, []
    for iv in stretches:
        if iv.name != name and group:
            yield name, group
            group = []
        name = iv.name
        group.append(iv)
    if group:
        yield name, group


def _record_track(length: int, pieces: list[tuple[Interval, np.ndarray]]) -> np.ndarray:
    """One record-long track from its stretches' values (zeros elsewhere): a track lists each record once."""
    if len(pieces) == 1 and (pieces[0][0].start, pieces[0][0].end) == (0, length):
        return pieces[0][1]
    track = np.zeros(length, dtype=np.float32)
    for iv, values in pieces:
        track[iv.start : iv.end] = values
    return track


def annotate_genome(
    model: TaggingModel | str | Path | None,
    fasta: str | Path,
    out: str | Path,
    *,
    evidence: str = "network",
    gene_model: Any = None,
    records: list[str] | None = None,
    regions: str | Path | list | None = None,
    organism: str | None = None,
    window_length: int | None = None,
    batch_size: int = 8,
    both_strands: bool = True,
    bigwig: bool = False,
    device: str = "auto",
    gene_cost: float | None = None,
    codon_weight: float | None = None,
    start_weight: float | None = None,
    closed_ends: bool | None = None,
    evidence_weights: EvidenceWeights | str | Path | None = None,
    model_starts: bool = True,
) -> Annotation:
    """Predict, decode and export gene regions for every record (or region) of ``fasta``.

    ``model`` is a :func:`load_model` result or a model folder; with ``evidence="none"`` it may be
    ``None`` (then ``organism`` is required) and only gives the scheme, organism and gene cost.
    ``gene_model`` (a :class:`~genoformer.genemodel.GeneModel` or its folder; eukaryotes) calls the genes
    with that learned gene model instead of the decoder: alone with ``evidence="none"``, else with the
    network's probabilities (without ``model``: its site network's alone) weighed into its scores by
    ``evidence_weights`` (an
    :class:`~genoformer.genemodel.EvidenceWeights` or its JSON file; default: the gene model folder's
    ``evidence_weights.json``, written by ``genoformer combine`` / :func:`genoformer.combine.fit_evidence`).
    ``regions`` is a BED path or a list of Intervals; ``out`` is a prefix for PREFIX.gff3,
    PREFIX.bed and (with a network) one probability track per class and strand, each listing every
    annotated record once (zeros outside its regions). A lock file beside the outputs
    (``.PREFIX.lock``) refuses a second run writing the same prefix at once. ``gene_cost`` overrides the
    prokaryotic decoder's cost per gene (summed coding log-odds; lower it for a less confident
    model), ``codon_weight`` and ``start_weight`` the weights of its self-trained codon and
    start-site statistics (0: off), which are learnt from all records (or regions) together: their
    probabilities wait in a hidden folder beside the outputs (``.PREFIX.probs-*.tmp``, 48 bytes a base;
    removed at the end, left behind only by a killed run, as the outputs' temporary files are) until
    every record is predicted. ``closed_ends`` forbids genes running off a record's or region's ends
    (by default they are called, flagged partial). The model folder's start model (prokaryotes: where
    genes start, learnt from its training genome's annotation) chooses each gene's start unless
    ``model_starts`` is False: for a genome other than the one the model was trained on, whose ribosome
    binding sites may differ, the decoder then learns them from its own calls alone. With ``evidence``
    "network", the folder's start network (``genoformer start-network``) adds its evidence to the start model's;
    with "starts" it alone does (the tagger is not run; probabilities as with "none").
    """
    from .export import open_track, write_bed, write_gff3
    from .genome import make_annotation

    if evidence not in EVIDENCE:
        raise ConfigError(f"evidence must be one of {EVIDENCE}, got {evidence!r}")
    if evidence == "starts" and (gene_model is not None or not model_starts):
        raise ConfigError("evidence 'starts' weighs a prokaryote model folder's start network beside its start model: "
                          "not with a gene model, nor with self-trained starts")
    weights = None
    if gene_model is not None:
        if evidence == "none" and evidence_weights is not None:
            raise ConfigError("evidence weights combine a network with the gene model: they need --evidence network")
        folder = None if isinstance(gene_model, GeneModel) else gene_model
        gene_model, organism = _gene_model(gene_model, organism)
        weights = _evidence_weights(evidence_weights, folder, gene_model, evidence)
    elif evidence_weights is not None:
        raise ConfigError("evidence weights weigh a network against a learned gene model: give the gene model too")
    tagger_dropped = weights is not None and model is not None and not weights.reads_tagger
    if tagger_dropped:
        # combine gave the tagger's probabilities no weight (they did not help on validation): running it
        # would change no call, only cost the time of its four passes per base.
        print("genoformer: the evidence weights give the tagging model's probabilities weight 0: it is not "
              "run, and no probability tracks are written", file=sys.stderr)
        model = None
    sites_only = model is None and evidence == "network" and gene_model is not None and (
        gene_model.site_model is not None or tagger_dropped)
    if evidence == "starts" and model is None:
        raise ConfigError(NO_START_NETWORK)
    if model is None:
        if evidence == "network" and not sites_only:
            raise ConfigError("annotating with a network needs a model (--model), or a gene model with a site network; "
                              "evidence 'none' (--evidence none) runs the gene decoder alone")
        if organism is None:
            raise ConfigError("without a model, give the organism (--organism prokaryote or eukaryote) to choose "
                              "the gene decoder")
        model = decoder_alone(organism)
    elif not isinstance(model, TaggingModel):
        model = load_model(model)
    if evidence == "starts" and model.start_network is None:
        raise ConfigError(NO_START_NETWORK)
    network = model.network if evidence == "network" else None  # None also when the site network is the only one
    scheme = model.scheme
    organism = organism or model.organism
    decoder_options = gene_decoder_options(organism, model.loss, gene_cost=gene_cost, codon_weight=codon_weight,
                                           start_weight=start_weight, closed_ends=closed_ends)
    start_model = model.start_model if model_starts and self_trains(scheme, organism) else None
    if start_model is not None:
        decoder_options["start_model"] = start_model
        if evidence != "none" and model.start_network is not None and model.start_network.weight > 0:
            decoder_options["start_evidence"] = model.start_network.to(_device(device)).scores
    if network is None:
        uninformative_probabilities(scheme, organism, 0)  # refuses a scheme without gene structure now
    else:
        window = window_length or model.window_length
        min_window = model.tokenizer.k
        if window < max(min_window, 1):
            raise ConfigError(f"window length {window} is below the model's minimum ({min_window} bases); "
                              "set --window-length")
        dev = _device(device)
        network.to(dev)
    if weights is not None and gene_model.site_model is not None:
        gene_model.site_model.network.to(_device(device))  # the splice-site network runs where the tagger does
    combined = combined_evidence(weights, scheme.classes, gene_model.site_model) if weights is not None else None
    genome = Genome(fasta)
    learnt_on = start_model.records if start_model is not None else ()
    if learnt_on and not set(learnt_on) & set(genome.names):
        print(f"genoformer: warning: {fasta}: the model's start model was learnt on other records "
              f"({', '.join(learnt_on[:3])}{', ...' if len(learnt_on) > 3 else ''}); if this is another species, "
              "whose ribosome binding sites may differ, add --self-trained-starts", file=sys.stderr)
    stretches = genome_stretches(genome, fasta, records, regions)
    min_stretch = model.tokenizer.k if network is not None else 1

    def probabilities(iv: Interval, progress) -> np.ndarray:  # (2, classes, len(iv))
        if network is None:
            return uninformative_probabilities(scheme, organism, len(iv))
        from .predict import predict_record

        return predict_record(network, genome, iv.name, model.tokenizer, scheme.n_classes, window_length=window,
                              start=iv.start, end=iv.end, batch_size=batch_size, both_strands=both_strands,
                              device=dev, progress=progress)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"gff3": out.with_name(out.name + ".gff3"), "bed": out.with_name(out.name + ".bed")}
    suffix = ".bw" if bigwig else ".bedgraph"
    tracked = list(scheme.classes[1:]) if network is not None else []
    lengths = {iv.name: genome.lengths[iv.name] for iv in stretches}
    tables = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(out.with_name(f".{out.name}.lock"), f"the outputs {out}.*"))
        update, close = _progress(sum(len(iv) for iv in stretches) * (2 if both_strands else 1)
                                  if network is not None else 0, "annotate")
        stack.callback(close)
        writers = {}
        for cls in tracked:
            for strand, sign in TRACK_STRANDS:
                key = f"{cls}.{strand}"
                paths[key] = out.with_name(f"{out.name}.{key}{suffix}")
                writers[key] = stack.enter_context(open_track(
                    paths[key], f"{out.name} {cls} ({sign})", sequence_lengths=lengths if bigwig else None,
                    description=f"genoformer P({cls}) on the {sign} strand"))
        # A prokaryote's decoder self-trains on the genes it calls: with several records (contigs,
        # plasmids) it learns from all of them, so each record's network probabilities wait on disk for that.
        pooled = len(stretches) > 1 and self_trains(scheme, organism)
        scratch = None
        if pooled and network is not None:
            # Beside the outputs, on the disk chosen for them (a small /tmp would not hold 48 bytes a base of
            # a large draft genome), hidden and named like the outputs' own temporary files.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f".{out.name}.probs-", suffix=".tmp", dir=out.parent)))
        waiting = []
        for name, group in _by_record(stretches):
            predicted = []
            for iv in group:
                if len(iv) < min_stretch:
                    print(f"genoformer: {fasta}: record {iv.name!r} [{iv.start}, {iv.end}) is shorter than one "
                          f"{min_stretch}-mer token; no predictions for it", file=sys.stderr)
                    continue
                if gene_model is not None and network is None:  # the gene model (and its site network) read the sequence
                    sites = (lambda r: combined(None, genome.fetch(r.name, r.start, r.end))) if sites_only else None
                    tables.append(decode_with_gene_model(genome, gene_model, [iv], id_prefix=_stretch(genome, iv).id_prefix,
                                                         evidence=sites))
                    continue
                probs = probabilities(iv, update)
                if gene_model is not None:  # the network's evidence weighed into the gene model's scores
                    sequence = genome.fetch(iv.name, iv.start, iv.end)
                    tables.append(decode_with_gene_model(genome, gene_model, [iv], id_prefix=_stretch(genome, iv).id_prefix,
                                                         evidence=lambda _, p=probs, s=sequence: combined(p, s)))
                elif not pooled:
                    tables += decode_stretches([_stretch(genome, iv)], lambda i, lazy: (
                        genome.fetch(iv.name, iv.start, iv.end), probs), scheme, organism, **decoder_options)
                elif scratch is not None:
                    path = scratch / f"{len(waiting)}.npy"
                    np.save(path, probs)
                    waiting.append((iv, path))
                else:
                    waiting.append((iv, None))
                if tracked:
                    predicted.append((iv, probs))
            for c, cls in enumerate(scheme.classes):
                if cls in tracked and predicted:
                    for row, (strand, _) in enumerate(TRACK_STRANDS):
                        track = _record_track(genome.lengths[name], [(iv, p[row, c]) for iv, p in predicted])
                        writers[f"{cls}.{strand}"].add(name, track)
        if waiting:
            def load(i: int, lazy: bool) -> tuple[str, np.ndarray]:
                iv, path = waiting[i]
                probs = probabilities(iv, None) if path is None else np.load(path, mmap_mode="r" if lazy else None)
                return genome.fetch(iv.name, iv.start, iv.end), probs

            tables += decode_stretches([_stretch(genome, iv) for iv, _ in waiting], load, scheme, organism,
                                       **decoder_options)
        features = pd.concat(tables, ignore_index=True) if tables else make_annotation(
            {"seqid": [], "type": [], "start": [], "end": []})
        write_gff3(features, paths["gff3"], lengths)
        write_bed(features, paths["bed"], sequence_lengths=lengths,
                  types=["gene", "ncRNA"] if scheme.kind == "gene_structure" else None)
    return Annotation(paths=paths, features=features)
