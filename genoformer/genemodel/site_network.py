"""The gene model's splice-site network: trained on the training regions' annotated introns, stored in
the gene model's folder, read at decoding time as evidence on each candidate donor and acceptor.

Training (:func:`fit_site_network`) reads both strands of the training regions. Every donor and acceptor
candidate the decoder would consider (the gene model's donor and acceptor dinucleotides) is a labelled
position of its kind: 1 where an annotated coding transcript (any isoform) splices between two CDS
pieces, 0 elsewhere, except at the other introns' ends of any annotated transcript (UTR introns,
non-coding RNAs, pseudogenes), which are real splice sites the decoder never uses: they carry no label,
rather than teach the network that a real site is a decoy. Other bases carry no label. The network and its training loop are
:mod:`genoformer.model.site_model`'s.

Its output is the log-odds that a candidate is a real site, at the training set's share of real sites
among candidates. :class:`~genoformer.genemodel.evidence.EvidenceWeights` scales and shifts it into the
gene model's signal scores (fitted on validation regions).

Files (beside ``gene_model.json``, never pickle): ``site_network.json`` (format, configuration, the
candidate words and a training summary) and ``site_network.safetensors`` (the weights).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.decode.eukaryote import signal_positions
from genoformer.decode.segments import encode_bases, reverse_complement_codes
from genoformer.errors import ConfigError
from genoformer.genemodel.training import coding_transcripts, merged_pieces, transcript_pieces
from genoformer.genome.intervals import Interval
from genoformer.model.site_model import UNLABELLED, SiteModel, SiteTraining, train_site_network
from genoformer.model.sites import SiteNetworkConfig

SITE_KINDS = ("donor", "acceptor")  # the network's output rows
STEM = "site_network"  # its files: site_network.json, site_network.safetensors
CONFIG_FILE, WEIGHTS_FILE = f"{STEM}.json", f"{STEM}.safetensors"


def site_labels(codes: np.ndarray, real: dict[str, Sequence[int]], words: dict[str, Sequence[str]],
                unlabelled: dict[str, Sequence[int]] | None = None) -> np.ndarray:
    """(kinds, n) int8 labels of one strand (``codes`` in strand coordinates), a row per ``SITE_KINDS``: at
    each candidate boundary of a kind (its ``words``) 1 if ``real`` lists it (boundaries, strand
    coordinates), else 0 unless ``unlabelled`` lists it; :data:`UNLABELLED` at other positions and at
    listed sites that are not candidates."""
    n = len(codes)
    candidates = signal_positions(codes, starts=(), stops=(), donors=words["donor"], acceptors=words["acceptor"])
    labels = np.full((len(SITE_KINDS), n), UNLABELLED, np.int8)
    for row, kind in enumerate(SITE_KINDS):
        at = candidates[kind]
        candidate = np.zeros(n, bool)
        candidate[at[at < n]] = True
        labels[row, candidate] = 0
        labels[row, _inside((unlabelled or {}).get(kind, ()), n)] = UNLABELLED
        listed = _inside(real.get(kind, ()), n)
        labels[row, listed[candidate[listed]]] = 1
    return labels


def _inside(boundaries: Sequence[int], n: int) -> np.ndarray:
    listed = np.asarray(sorted(set(boundaries)), dtype=np.int64)
    return listed[(listed >= 0) & (listed < n)]


def region_sites(annotation: pd.DataFrame, region: Interval, by_record: dict | None = None, *,
                 introns: str = "coding") -> dict[str, dict]:
    """The donors and acceptors of every transcript wholly inside ``region``, as boundaries in each strand's
    coordinates within the region: ``{"+": {"donor": [...], "acceptor": [...]}, "-": {...}}``. ``introns``:
    ``"coding"``, the introns between the CDS pieces of coding transcripts; ``"any"``, those between the
    exons of any transcript (pseudogenes' too). ``by_record`` caches the record's pieces between calls."""
    key = (region.name, introns)
    if by_record is not None and key in by_record:
        pieces = by_record[key]
    else:
        pieces = (coding_transcripts(annotation, region.name) if introns == "coding"
                  else transcript_pieces(annotation, region.name, ("exon",), pseudo=True))
        if by_record is not None:
            by_record[key] = pieces
    n = len(region)
    sites = {strand: {kind: [] for kind in SITE_KINDS} for strand in "+-"}
    inside = pieces[(pieces["start"] >= region.start) & (pieces["end"] <= region.end)]
    spans = pieces.groupby("transcript")[["start", "end"]].agg({"start": "min", "end": "max"})
    whole = set(spans.index[(spans["start"] >= region.start) & (spans["end"] <= region.end)])
    for transcript, rows in inside[inside["transcript"].isin(whole)].groupby("transcript", sort=False):
        strand = rows["strand"].iloc[0]
        if strand not in sites:
            continue
        exons = merged_pieces(rows[["start", "end"]].to_numpy() - region.start)
        if strand == "-":
            exons = [(n - e, n - s) for s, e in exons[::-1]]
        for (_, donor), (acceptor, _) in zip(exons, exons[1:]):
            sites[strand]["donor"].append(donor)
            sites[strand]["acceptor"].append(acceptor)
    return sites


def load_site_model(folder: str | Path) -> SiteModel:
    """The splice-site network stored in a gene model's folder (see :meth:`SiteModel.load`)."""
    return SiteModel.load(folder, STEM, SITE_KINDS, 2, "learn the gene model again with this version")


def fit_site_network(genome, annotation: pd.DataFrame, regions: Iterable[Interval], *, words: dict[str, Sequence[str]],
                     config: SiteNetworkConfig | None = None, training: SiteTraining | None = None,
                     progress: Callable[[str], None] | None = None) -> SiteModel:
    """Train a site network on the annotated introns of ``regions`` of ``genome`` (see the module);
    ``words``: each kind's candidate dinucleotides (``{"donor": ("GC", "GT"), "acceptor": ("AG",)}``)."""
    words = {kind: tuple(words[kind]) for kind in SITE_KINDS}
    regions = list(regions)
    config, training = config or SiteNetworkConfig(), training or SiteTraining()
    began = time.perf_counter()
    views, labels = [], []
    by_record: dict = {}
    for region in regions:
        codes = encode_bases(genome.fetch(region.name, region.start, region.end))
        sites = region_sites(annotation, region, by_record)
        spliced = region_sites(annotation, region, by_record, introns="any")
        for strand, view in (("+", codes), ("-", reverse_complement_codes(codes))):
            views.append(view)
            labels.append(site_labels(view, sites[strand], words, unlabelled=spliced[strand]))
    real = {kind: int(sum((lab[row] == 1).sum() for lab in labels)) for row, kind in enumerate(SITE_KINDS)}
    if min(real.values()) == 0:
        names = ", ".join(sorted({iv.name for iv in regions})) or "none"
        raise ConfigError(f"the site network learns from annotated introns, but the training regions "
                          f"({names}) hold " + ", ".join(f"{count} {kind}s" for kind, count in real.items())
                          + " at candidate words")
    network = train_site_network(views, labels, SITE_KINDS, config, training, progress)
    report = {**{f"{kind}s": count for kind, count in real.items()}, "steps": training.steps,
              "training seconds": round(time.perf_counter() - began, 1)}
    return SiteModel(network, words, report=report)
