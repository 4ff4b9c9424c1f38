"""A filter for called genes that look like the annotation's pseudogenes and transposable-element genes.

Transposable-element genes hold long open reading frames that read as coding to any content model, yet
annotations give them no CDS: NCBI's A. thaliana RefSeq files them as pseudogenes (590 of chromosome 1's
930 pseudogenes lie in its pericentromere, 12-18 Mb), TAIR as ``transposable_element_gene``. Decoded
over chromosome 1's first 24 Mb, the gene model calls 1,059 complete genes lying mostly inside them,
beside 5,043 on annotated genes. The filter learns from those calls what sets them apart:

* a Markov chain of the same order as the gene model's, counted over the annotation's pseudogene and
  transposable-element bases (strand as annotated, outside every coding transcript's span): the
  "look-alike" chain;
* the protein words (:data:`PROTEIN_WORD` amino acids) of the gene model's own look-alike calls on its
  training regions (below): the "look-alike families". Transposable elements come in families whose copies
  keep their proteins (transposase, reverse transcriptase) across the genome, so a new copy shares words with
  the training copies that no content model sees;
* per call (complete genes only; a partial one is never dropped), five features: the mean per coding base
  of the coding chain's log-probability against the look-alike chain's, the same against the intergenic
  chain's, the log of the CDS length, the number of exons, and the share of its protein's words found in the
  look-alike families;
* a logistic regression of look-alike calls against calls on annotated genes, whose threshold drops a
  given ``share`` of the training gene calls (default 0.005).

Fitting it needs the gene model's own calls on its training regions
(:func:`genoformer.genemodel.fitting.fit_pseudogene_filter`); this module holds the features, the
regression and the stored filter.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import pandas as pd
from Bio.Data.CodonTable import standard_dna_table

from genoformer.genemodel.markov import log_probabilities
from genoformer.genome.annotation_table import marked_pseudo

# Annotation rows whose bases teach the look-alike chain: types naming pseudogenes or transposable elements
# (pseudogene, pseudogenic_transcript, transposable_element_gene, ...), genes marked pseudo=true, and genes
# whose biotype names one (Ensembl and GENCODE: gene_biotype / gene_type / biotype "transcribed_pseudogene").
LOOKALIKE_PATTERN = "pseudogen|transposable|transposon"
_BIOTYPE_KEYS = ("gene_biotype", "gene_type", "biotype")
FEATURES = ("coding vs look-alike per base", "coding vs intergenic per base", "log CDS length", "exons",
            "share of protein words in look-alike families")
# The share of the training genes' calls the threshold gives up, chosen on A. thaliana chromosome 1
# validation (24-27 Mb) among 0, 0.005, 0.01 and 0.02 (mean of nucleotide CDS, CDS exon and gene F1:
# 0.8650, 0.8652, 0.8634, 0.8609; docs/gene-decoding.md).
DEFAULT_SHARE = 0.005
MIN_CALLS = 30  # fewer training calls of either kind: no filter (a regression of noise)
CROSS_FIT_BLOCK = 100_000  # training calls read the look-alike chain and families of the other half's blocks
# Words of six amino acids: 20 ** 6 = 64 million of them, so that a protein of a few hundred amino acids hits
# the families of chromosome 1's ~1,000 look-alike calls (~240,000 words) by chance at about 1% of its words
# (calls on genes: 1.1% on average, look-alikes 32%).
PROTEIN_WORD = 6
_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
_NOT_AN_AMINO_ACID = len(_AMINO_ACIDS)  # a stop codon, or a codon with an N
# (64,) amino acid of each codon code 16a + 4b + c (bases coded A C G T = 0 1 2 3), stops not an amino acid
_CODONS = np.array([_AMINO_ACIDS.index(standard_dna_table.forward_table[a + b + c])
                    if a + b + c in standard_dna_table.forward_table else _NOT_AN_AMINO_ACID
                    for a in "ACGT" for b in "ACGT" for c in "ACGT"])
_L2 = 1e-3


def lookalike_spans(annotation: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of record ``name`` that are pseudogenes or transposable elements: columns strand, start, end."""
    rows = annotation[annotation["seqid"] == name]
    pattern = re.compile(LOOKALIKE_PATTERN, re.IGNORECASE)
    kinds = rows["type"].astype(str).str.contains(pattern).to_numpy()
    marked = np.array([kind == "gene" and (marked_pseudo(a) or isinstance(a, dict) and any(
        pattern.search(str(a.get(key, ""))) for key in _BIOTYPE_KEYS)) for a, kind in zip(rows["attributes"], rows["type"])],
        dtype=bool)
    chosen = rows[kinds | marked]
    return pd.DataFrame({"strand": chosen["strand"].to_numpy(object), "start": chosen["start"].to_numpy(np.int64),
                         "end": chosen["end"].to_numpy(np.int64)})


def call_features(codes: np.ndarray, words: np.ndarray, exons: int, coding: np.ndarray, intergenic: np.ndarray,
                  lookalike: np.ndarray, families: np.ndarray) -> np.ndarray:
    """(5,) :data:`FEATURES` of a complete call: ``codes`` and ``words`` its spliced CDS's bases and Markov words
    (at :func:`cds_positions`), ``exons`` its number of CDS pieces; ``coding`` (3, words + 1), ``intergenic`` and
    ``lookalike`` (words + 1,) log-probabilities (``markov.log_probabilities``); ``families`` sorted protein
    words (:func:`protein_words`)."""
    coding_logp = coding[np.arange(len(words)) % 3, words]  # (cds,) codon position = index % 3
    return np.array([np.mean(coding_logp - lookalike[words]), np.mean(coding_logp - intergenic[words]),
                     np.log(len(words)), float(exons), family_share(protein_words(codes), families)])


def cds_positions(pieces: Sequence[tuple[int, int]]) -> np.ndarray:
    """(cds,) the strand positions of a call's spliced CDS, ``pieces`` in strand coordinates (5' to 3')."""
    return np.concatenate([np.arange(s, e) for s, e in pieces])


def protein_words(codes: np.ndarray) -> np.ndarray:
    """Codes (base 20) of the :data:`PROTEIN_WORD`-amino-acid words of a spliced CDS's translation (``codes``,
    frame 0), words over a stop or an N left out."""
    codons = codes[: len(codes) // 3 * 3].reshape(-1, 3).astype(np.int64)  # (codons, 3)
    amino = np.where((codons > 3).any(axis=1), _NOT_AN_AMINO_ACID, _CODONS[np.minimum(codons, 3) @ (16, 4, 1)])
    if len(amino) < PROTEIN_WORD:
        return np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(amino, PROTEIN_WORD)  # (words, PROTEIN_WORD)
    whole = windows[(windows < _NOT_AN_AMINO_ACID).all(axis=1)]
    return whole @ len(_AMINO_ACIDS) ** np.arange(PROTEIN_WORD - 1, -1, -1)


def family_share(words: np.ndarray, families: np.ndarray) -> float:
    """The share of protein ``words`` found in the sorted ``families`` (0 for a protein too short for a word)."""
    if not len(words) or not len(families):
        return 0.0
    at = np.minimum(np.searchsorted(families, words), len(families) - 1)
    return float((families[at] == words).mean())


def fit_logistic(features: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised logistic regression (Newton steps, a small ridge) of ``labels`` (1: look-alike) on
    ``features`` (calls, features): (center, scale, weights), weights[0] the intercept."""
    center, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = np.column_stack([np.ones(len(features)), (features - center) / scale])
    weights = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(design @ weights, -50, 50)))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + _L2 * np.eye(len(weights))
        weights = weights + np.linalg.solve(hessian, design.T @ (labels - p) - _L2 * weights)
    return center, scale, weights


@dataclass(frozen=True)
class PseudogeneFilter:
    """A fitted filter: the look-alike chain's ``counts`` (4 ** (order + 1),), the look-alike ``families``
    (sorted unique :func:`protein_words`), the regression (``center``, ``scale``: (5,), ``weights``: (6,)), and
    the ``threshold`` above which a call is dropped, set so that ``share`` of the training genes' calls score
    above it."""

    counts: np.ndarray
    families: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    threshold: float
    share: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(calls,) log-odds that each call (rows of :func:`call_features`) is a look-alike."""
        return np.column_stack([np.ones(len(features)), (features - self.center) / self.scale]) @ self.weights

    def lookalike_log_probabilities(self, pseudocount: float) -> np.ndarray:
        return log_probabilities(self.counts, pseudocount)

    def to_dict(self) -> dict:
        return {"counts": self.counts.tolist(), "families": self.families.tolist(), "center": self.center.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(), "threshold": self.threshold,
                "share": self.share}

    @classmethod
    def from_dict(cls, data, order: int, fail: Callable[[str, str], NoReturn]) -> "PseudogeneFilter":
        """A filter from :meth:`to_dict`'s mapping for a gene model of ``order``; anything else refused through
        ``fail(field, why)``."""
        shapes = {"counts": 4 ** (order + 1), "center": len(FEATURES), "scale": len(FEATURES),
                  "weights": len(FEATURES) + 1}
        if not isinstance(data, dict) or set(data) != set(shapes) | {"families", "threshold", "share"}:
            fail("pseudogene_filter", f"must map {sorted(set(shapes) | {'families', 'threshold', 'share'})} to "
                                      "their values")
        arrays = {}
        for name, size in shapes.items():
            value = data[name]
            whole = name == "counts"
            if not (isinstance(value, list) and len(value) == size and all(_number(x, whole) for x in value)):
                fail(f"pseudogene_filter.{name}", f"must be a list of {size} "
                                                  + ("non-negative whole-number counts" if whole else "finite numbers"))
            if whole and any(x < 0 or x >= 2 ** 62 for x in value):
                fail(f"pseudogene_filter.{name}", f"must be a list of {size} non-negative whole-number counts")
            arrays[name] = np.asarray(value, dtype=np.int64 if whole else np.float64)
        families = data["families"]
        if not (isinstance(families, list) and all(_number(x, True) and 0 <= x < len(_AMINO_ACIDS) ** PROTEIN_WORD
                                                   for x in families)):
            fail("pseudogene_filter.families", f"must be a list of protein words from 0 up to (not including) 20 ** {PROTEIN_WORD}")
        arrays["families"] = np.asarray(families, dtype=np.int64)
        if (np.diff(arrays["families"]) <= 0).any():
            fail("pseudogene_filter.families", "must be sorted, without repeats")
        if (arrays["scale"] <= 0).any():
            fail("pseudogene_filter.scale", "must be positive")
        for name in ("threshold", "share"):
            if not _number(data[name], False) or (name == "share" and not 0 < data[name] < 1):
                fail(f"pseudogene_filter.{name}", f"{data[name]!r} is not a valid value")
        return cls(**arrays, threshold=float(data["threshold"]), share=float(data["share"]))


def _number(value, whole: bool) -> bool:
    """A JSON number (a whole one if ``whole``), finite, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        return False
    try:
        return whole or math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False
