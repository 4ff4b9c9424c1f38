"""A start-site network for the prokaryote decoder: which start codon of an open reading frame begins its gene.

The start model (:mod:`genoformer.decode.start_sites`) weighs hand-chosen features of each candidate
start (the bases around it, Shine-Dalgarno motifs and spacers, its rank in the ORF, codon statistics)
with a linear conditional logit. A convolutional network (:class:`~genoformer.model.sites.SiteNetwork`,
150 bases of reach either side) trained on the same annotated genes reads what those features miss:
combinations of bases, motifs off the consensus, what the coding sequence downstream looks like.

Training (:func:`fit_start_network`): every start codon of both strands of the training regions is a
labelled candidate, 1 where an annotated CDS (not a pseudogene) begins, 0 elsewhere; the network and
its training loop are :mod:`genoformer.model.site_model`'s. Its logit enters the start model's score
of each candidate, times a weight, before the softmax over the ORF's candidates. The weight is chosen
on validation regions from :data:`WEIGHT_GRID`, by how many validation genes' ORFs get their annotated
start first (the smallest weight among equals; 0 when the network does not help).

Files in the tagging model's folder (beside ``config.json``, never pickle): ``start_network.json`` (the
weight among its settings, the validation trials in its report) and ``start_network.safetensors``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genoformer.decode.codon_statistics import codon_frame_sums, hexamer_log_odds
from genoformer.decode.prokaryote import START_CODONS, STOP_CODONS
from genoformer.decode.segments import word_codes, word_mask
from genoformer.decode.start_sites import StartModel, candidate_starts, strand_genes
from genoformer.errors import ConfigError, ModelFileError
from genoformer.model.io import START_NETWORK_STEM
from genoformer.model.site_model import UNLABELLED, SiteModel, SiteTraining, train_site_network
from genoformer.model.sites import SiteNetworkConfig

START_KINDS = ("start",)  # the network's one output row
STEM = START_NETWORK_STEM  # its files in the tagging model's folder: start_network.json, start_network.safetensors
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# E. coli validation (NC_000913.3:3.85-4.08 Mb, learnt from 0-3.85 Mb): 300 steps ranked the annotated
# start first in 0.940 of the validation genes' ORFs at weight 1, against 0.900 for the start model alone.
DEFAULT_STEPS = 300
MIN_LENGTH = 90  # the decoder's shortest gene: a start closer to its stop is no candidate


def start_labels(codes: np.ndarray, begins: np.ndarray, starts: Sequence[str]) -> np.ndarray:
    """(1, n) int8 labels of one strand: 0 at each start codon, 1 at those in ``begins`` (annotated gene starts),
    :data:`UNLABELLED` elsewhere (and at a listed begin that is no start codon: a gene running in from an edge)."""
    labels = np.full((1, len(codes)), UNLABELLED, np.int8)
    is_start = word_mask(word_codes(codes, 3), starts, 3)
    labels[0, is_start] = 0
    begins = begins[(begins >= 0) & (begins < len(codes))]
    labels[0, begins[is_start[begins]]] = 1
    return labels


@dataclass
class StartNetwork:
    """A trained start network and the weight its logits carry in the start model's scores."""

    site_model: SiteModel
    _recent: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # strand bytes -> its scores

    @property
    def weight(self) -> float:
        return float(self.site_model.settings["weight"])

    def scores(self, codes: np.ndarray) -> np.ndarray:
        """(len(codes),) ``weight`` x the network's log-odds of a start at each base of one strand (``codes`` read
        5' -> 3'); the decoder adds them to its start model's scores. The last two strands' are kept: the decoder
        asks for both strands of a stretch once per pass."""
        key = codes.tobytes()  # the strand itself: a dictionary compares it whole on a hash match
        if key not in self._recent:
            if len(self._recent) == 2:
                del self._recent[next(iter(self._recent))]
            self._recent[key] = self.weight * self.site_model.logits(codes)[0, :len(codes)].astype(np.float64)
        return self._recent[key]

    def to(self, device) -> "StartNetwork":
        self.site_model.network.to(device)
        return self

    def save(self, folder: str | Path) -> None:
        self.site_model.save(folder, STEM)

    @classmethod
    def load(cls, folder: str | Path) -> "StartNetwork | None":
        """The start network in a tagging model's folder; None without its files (one without the other is refused)."""
        folder = Path(folder)
        if not any((folder / f"{STEM}{suffix}").exists() for suffix in (".json", ".safetensors")):
            return None
        model = SiteModel.load(folder, STEM, START_KINDS, 3, "train the start network again with this version")
        weight = model.settings.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise ModelFileError(folder / f"{STEM}.json", f"start network setting 'weight': needs a number >= 0, "
                                                          f"got {weight!r}")
        return cls(model)


def start_ranks(strands: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], start_model: StartModel,
                network: SiteModel, starts: Sequence[str], stops: Sequence[str],
                codon_table: np.ndarray) -> pd.DataFrame:
    """Every candidate start of the ORFs of the given genes (annotated start among them): columns orf (numbered
    over all strands), gold (the annotated start), model (the start model's raw score) and logit (the network's)."""
    frames, n_orfs = [], 0
    for codes, begin, end in strands:
        at, orf_end, rank = candidate_starts(word_codes(codes, 3), starts, stops, MIN_LENGTH)
        truth = pd.Series(begin, index=end)
        truth = truth[~truth.index.duplicated(keep=False)]  # one stop, two annotated starts: no single answer
        keep = np.isin(orf_end, truth.index)
        at, orf_end, rank = at[keep], orf_end[keep], rank[keep]
        gold = at == truth.reindex(orf_end).to_numpy()
        frame_sums = codon_frame_sums(word_codes(codes, 6), codon_table, 1.0)
        frame = pd.DataFrame({"orf": np.unique(orf_end, return_inverse=True)[1] + n_orfs, "gold": gold,
                              "model": start_model.raw_scores(codes, at, orf_end, rank, frame_sums),
                              "logit": network.logits(codes)[0, at]})
        frame = frame[frame.groupby("orf")["gold"].transform("any")]
        n_orfs = int(frame["orf"].max()) + 1 if len(frame) else n_orfs
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def first_right(ranks: pd.DataFrame, weight: float) -> float:
    """The share of ORFs whose annotated start scores highest under model + ``weight`` x logit (ties: wrong)."""
    score = ranks["model"] + weight * ranks["logit"]
    top = score.groupby(ranks["orf"]).transform("max")
    best = (score == top).groupby(ranks["orf"]).transform("sum")
    return float(((score == top) & (best == 1) & ranks["gold"]).groupby(ranks["orf"]).any().mean())


def fit_start_network(train: Iterable[tuple[str, pd.DataFrame]], validation: Iterable[tuple[str, pd.DataFrame]],
                      start_model: StartModel, *, starts: Sequence[str] = tuple(START_CODONS),
                      stops: Sequence[str] = STOP_CODONS, config: SiteNetworkConfig | None = None, training: SiteTraining | None = None,
                      progress: Callable[[str], None] | None = None) -> StartNetwork:
    """Train a start network on the annotated genes of ``train`` and choose its weight beside ``start_model`` on
    those of ``validation`` (each yields (sequence, genes) as
    :func:`~genoformer.decode.start_sites.region_genes`); see the module."""
    config, training = config or SiteNetworkConfig(), training or SiteTraining(steps=DEFAULT_STEPS)
    began = time.perf_counter()
    train_strands = [s for sequence, genes in train for s in strand_genes(sequence, genes, MIN_LENGTH)]
    val_strands = [s for sequence, genes in validation for s in strand_genes(sequence, genes, MIN_LENGTH)]
    n_train, n_val = (sum(len(b) for _, b, _ in strands) for strands in (train_strands, val_strands))
    if n_train == 0 or n_val == 0:
        raise ConfigError(f"the start network learns from annotated genes and chooses its weight on others, but the "
                          f"training regions hold {n_train} and the validation regions {n_val} whole CDS")
    labels = [start_labels(codes, begin, starts) for codes, begin, _ in train_strands]
    network = train_site_network([codes for codes, _, _ in train_strands], labels, START_KINDS, config, training,
                                 progress, name="start network")
    site_model = SiteModel(network, {"start": tuple(starts)})
    codon_table = hexamer_log_odds([word_codes(codes, 6) for codes, _, _ in train_strands],
                                   [(begin, end) for _, begin, end in train_strands])
    ranks = start_ranks(val_strands, start_model, site_model, starts, stops, codon_table)
    if ranks.empty:
        raise ConfigError("no validation gene's open reading frame holds its annotated start among the candidates: "
                          "the start network's weight cannot be chosen")
    trials = {str(w): round(first_right(ranks, w), 4) for w in WEIGHT_GRID}
    weight = max(WEIGHT_GRID, key=lambda w: (trials[str(w)], -w))
    site_model.settings = {"weight": weight}
    site_model.report = {"training genes": n_train, "validation ORFs": int(ranks["orf"].nunique()),
                         "steps": training.steps, "first right by weight": trials,
                         "training seconds": round(time.perf_counter() - began, 1)}
    if progress:
        progress(f"start network: annotated start ranked first in {trials[str(weight)]:.3f} of validation ORFs at "
                 f"weight {weight} (start model alone {trials['0.0']:.3f})")
    return StartNetwork(site_model)
