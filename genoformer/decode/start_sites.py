"""Where a bacterial gene starts: which start codon of its open reading frame.

A stop codon closes one open reading frame (ORF), and any of its in-frame start codons at least
``min_length`` bases from the stop may begin the gene. Two models score them:

1. Without an annotation, position-by-position base log-odds self-trained on the decoder's own calls
   (:func:`start_site_log_odds`, around its starts against the other starts of the same ORFs), as
   Prodigal trains on the genome it annotates. The decoder adds a start's summed log-odds to its
   gene's score, so they weigh both which ORFs are genes and where each starts.
2. :class:`StartModel`, learnt from an annotation (the training regions of a tagger's fine-tuning
   data), chooses among an ORF's starts. Each candidate gets features:

   - the bases around it, one-hot over ``START_SITE`` (30 upstream: binding site and spacer; the start
     codon and the next), which also carry the start codon itself;
   - Shine-Dalgarno motifs: a substring of AGGAGG of 3, 4, 5 or 6 bases ending ``SPACER_BINS`` bases
     before the start. The motif's place varies by several bases from gene to gene, which a
     position-by-position table smears out;
   - its rank among the ORF's candidates from the 5' end (0, 1, 2, 3 or more) and the log of its gene's
     length against the longest candidate's: of two otherwise equal starts the upstream one is usually
     the gene's (E. coli: 64% of genes begin at their ORF's first candidate);
   - the in-frame codon statistics of the codons the longest candidate has beyond it: whether what a
     longer gene would add looks like this genome's genes;

   weighed by a conditional logit: a start's probability is the softmax of its score over its ORF's
   candidates, fitted by L2-regularised maximum likelihood. Every feature is relative within an ORF, so
   the model says nothing about whether an ORF is a gene, only where it starts; the decoder keeps the
   self-trained log-odds of the ORF's best start for the former and adds the start model's log
   probability for the latter.

   Measured on E. coli (NC_000913.3) as the fraction of genes with the right stop whose start was chosen
   right, learnt from the annotation of 0-3.85 Mb and read on the validation stretch: bases alone 0.79,
   with the motifs 0.85, with rank and length 0.90. The same conditional logit self-trained on the
   decoder's calls did no better than (1) (its training starts come from the decoder's earlier passes,
   whose choices it relearns), and a start model learnt from the reference annotation as (1) is (naive
   Bayes over positions) no better either: the features, not the labels, make the difference.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from genoformer.decode.segments import encode_bases, prefix_sums, reverse_complement_codes, word_codes, word_mask
from genoformer.evaluate.features import is_pseudo

# Bases read around a start codon: (upstream of it, from its first base on).
START_SITE = (30, 6)
SHINE_DALGARNO = "AGGAGG"
MOTIF_LENGTHS = (3, 4, 5, 6)
# Bases between a motif's end and the start codon, in bins (Prodigal's are 3-4, 5-10, 11-12, 13-15).
SPACER_BINS = ((3, 4), (5, 7), (8, 10), (11, 13), (14, 17))
RANKS = 4  # 0, 1, 2 and 3 or more candidates upstream in the same ORF
N_FEATURES = 4 * sum(START_SITE) + len(MOTIF_LENGTHS) * len(SPACER_BINS) + RANKS + 2
# Per weight, against the mean log-likelihood of a gene's start (E. coli validation, learnt from the
# annotation of the rest of the chromosome: 0.001 and 0.01 called 179 and 177 of 206 genes exactly).
L2 = 0.001
# Codon statistics (nats summed over a span) are scaled down to the other features' size before fitting.
CODON_SCALE = 0.1


def region_genes(genome, annotation: pd.DataFrame, regions: Iterable) -> Iterator[tuple[str, pd.DataFrame]]:
    """(sequence, genes) of each region (an Interval) of ``genome``: the CDS spans (not pseudogenes) lying wholly
    inside it, columns start, end (0-based half-open, region coordinates) and strand."""
    table = annotation[(annotation["type"] == "CDS") & ~is_pseudo(annotation)]
    by_record = dict(tuple(table.groupby("seqid")))
    for iv in regions:
        cds = by_record.get(iv.name, table.iloc[:0])
        inside = cds[(cds["start"] >= iv.start) & (cds["end"] <= iv.end)]
        genes = inside[["start", "end", "strand"]].assign(start=inside["start"] - iv.start, end=inside["end"] - iv.start)
        yield genome.fetch(iv.name, iv.start, iv.end), genes


def strand_genes(sequence: str, genes: pd.DataFrame, min_length: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Both strands of ``sequence`` as (codes read 5' -> 3', gene begins, gene ends) in strand coordinates, of
    the ``genes`` (start, end, strand) that are whole codons and at least ``min_length`` long: a joined CDS's
    pieces may be shorter or out of frame, and anything shorter than a gene the decoder would call teaches
    nothing about starts."""
    genes = genes[((genes["end"] - genes["start"]) % 3 == 0) & (genes["end"] - genes["start"] >= min_length)]
    codes = encode_bases(sequence)
    n = len(codes)
    plus = (genes["strand"] == "+").to_numpy()
    begin, end = genes["start"].to_numpy(np.int64), genes["end"].to_numpy(np.int64)
    return [(codes, begin[plus], end[plus]), (reverse_complement_codes(codes), n - end[~plus], n - begin[~plus])]


def orf_starts(words: np.ndarray, starts: Sequence[str], stops: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every start codon of a strand (``words``: its 3-mer codes) and the end (after the stop codon) of the
    ORF it opens, the first in-frame stop downstream; -1 without one."""
    stop_at = np.flatnonzero(word_mask(words, stops, 3))
    start_at = np.flatnonzero(word_mask(words, starts, 3))
    orf_end = np.full(len(start_at), -1)
    for frame in range(3):
        frame_stops = stop_at[stop_at % 3 == frame]
        in_frame = np.flatnonzero(start_at % 3 == frame)
        which = np.searchsorted(frame_stops, start_at[in_frame])
        ok = which < len(frame_stops)
        orf_end[in_frame[ok]] = frame_stops[which[ok]] + 3
    return start_at, orf_end


def candidate_starts(words: np.ndarray, starts: Sequence[str], stops: Sequence[str],
                     min_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every start codon of a strand (``words``: its 3-mer codes, read 5' -> 3') that may begin a gene:
    (start, orf_end, rank) arrays ordered by ORF and, within one, 5' -> 3'. ``orf_end`` is the end of
    the first in-frame stop codon downstream; the start lies at least ``min_length`` bases before it."""
    start_at, orf_end = orf_starts(words, starts, stops)
    keep = (orf_end >= 0) & (orf_end - start_at >= min_length)
    start_at, orf_end = start_at[keep], orf_end[keep]
    order = np.lexsort((start_at, orf_end))
    start_at, orf_end = start_at[order], orf_end[order]
    rank = pd.Series(orf_end).groupby(orf_end).cumcount().to_numpy()
    return start_at, orf_end, rank


def start_features(codes: np.ndarray, start_at: np.ndarray, orf_end: np.ndarray, rank: np.ndarray,
                   frame_sums: np.ndarray | None = None) -> np.ndarray:
    """(candidates, N_FEATURES) features of :func:`candidate_starts`' output on one strand (``codes``,
    read 5' -> 3'). ``frame_sums``: :func:`~genoformer.decode.codon_statistics.codon_frame_sums` at weight 1."""
    window, rest = _feature_parts(codes, start_at, orf_end, rank, frame_sums)
    return np.concatenate([(window[:, :, None] == np.arange(4)).reshape(len(window), 4 * window.shape[1]), rest], 1)


def _feature_parts(codes: np.ndarray, start_at: np.ndarray, orf_end: np.ndarray, rank: np.ndarray,
                   frame_sums: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The bases around each start, (candidates, sum(START_SITE)) codes (4: not ACGT or off the end), and
    the other features, (candidates, N_FEATURES - 4 * sum(START_SITE)): a strand has a few hundred
    thousand candidates, too many to hold their bases one-hot."""
    window = start_site_windows(codes, start_at)
    motifs = []
    for k in MOTIF_LENGTHS:
        found = prefix_sums(word_mask(word_codes(codes, k), {SHINE_DALGARNO[i:i + k] for i in range(7 - k)}, k)
                            .astype(np.float64))
        for near, far in SPACER_BINS:  # a motif beginning in [start - far - k, start - near - k]
            first, last = np.maximum(start_at - far - k, 0), np.maximum(start_at - near - k + 1, 0)
            motifs.append(found[last] > found[first])
    ranks = np.minimum(rank, RANKS - 1)[:, None] == np.arange(RANKS)
    longest = pd.Series(start_at).groupby(orf_end).transform("first").to_numpy()
    length = np.log((orf_end - start_at) / (orf_end - longest))
    # The codon statistics of what the ORF's longest candidate has beyond this start, negated (the
    # conditional logit reads only differences within an ORF).
    codons = (np.zeros(len(start_at)) if frame_sums is None
              else CODON_SCALE * (frame_sums[longest] - frame_sums[start_at]))
    return window, np.concatenate([np.stack(motifs, 1), ranks, length[:, None], codons[:, None]], 1)


def fit_start_model(features: np.ndarray, orf: np.ndarray, chosen: np.ndarray, l2: float = L2) -> np.ndarray:
    """(N_FEATURES,) weights of the conditional logit: ``features`` of every candidate start, ``orf``
    the index of each one's ORF (0 .. n_orfs - 1), ``chosen`` True at each ORF's gene start (one per ORF)."""
    x = torch.as_tensor(features)
    group = torch.as_tensor(orf, dtype=torch.int64)
    target = torch.as_tensor(np.flatnonzero(chosen), dtype=torch.int64)
    n_orfs = int(group.max()) + 1
    weights = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        value = -(x[target] @ weights).sum() + _group_logsumexp(x @ weights, group, n_orfs).sum()
        value = value / n_orfs + l2 * weights.pow(2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return weights.detach().numpy()


def _group_logsumexp(scores: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    top = torch.full((n_groups,), -torch.inf, dtype=scores.dtype).scatter_reduce(0, group, scores, "amax")
    top = top.detach()
    return top + torch.zeros(n_groups, dtype=scores.dtype).index_add(0, group, (scores - top[group]).exp()).log()


@dataclass(frozen=True)
class StartModel:
    """A fitted start model: its feature ``weights`` (N_FEATURES,) and the names of the ``records`` (FASTA
    sequences) it was learnt from, so that annotating another genome with it can be flagged."""

    weights: np.ndarray
    records: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"weights": [float(w) for w in self.weights], "records": list(self.records)}

    @classmethod
    def from_dict(cls, data: dict) -> "StartModel":
        """Checked: a model folder's head may come from another version or be edited by hand."""
        try:
            weights = np.asarray(data["weights"], dtype=np.float64)
        except (TypeError, KeyError, IndexError, ValueError):
            weights = np.zeros(0)
        if weights.shape != (N_FEATURES,) or not np.isfinite(weights).all():
            raise ValueError(f"a start model needs {N_FEATURES} finite weights")
        records = data.get("records", [])
        if not isinstance(records, list) or not all(isinstance(name, str) for name in records):
            raise ValueError("a start model's records must be a list of record names")
        return cls(weights, tuple(records))

    def log_probabilities(self, codes: np.ndarray, starts: Sequence[str], stops: Sequence[str], min_length: int,
                          frame_sums: np.ndarray | None = None, extra: np.ndarray | None = None) -> np.ndarray:
        """(length,) log probability of each candidate start of a strand (``codes`` read 5' -> 3') among its
        ORF's candidates (0 elsewhere). ``extra`` (length,): scores added to the model's at each candidate
        (a start network's, :mod:`genoformer.decode.start_network`)."""
        start_at, orf_end, rank = candidate_starts(word_codes(codes, 3), starts, stops, min_length)
        out = np.zeros(len(codes))
        if len(start_at):
            score = self.raw_scores(codes, start_at, orf_end, rank, frame_sums)
            if extra is not None:
                score = score + extra[start_at]
            top = pd.Series(score).groupby(orf_end).transform("max").to_numpy()
            total = pd.Series(np.exp(score - top)).groupby(orf_end).transform("sum").to_numpy()
            out[start_at] = score - top - np.log(total)
        return out

    def raw_scores(self, codes: np.ndarray, start_at: np.ndarray, orf_end: np.ndarray, rank: np.ndarray,
                   frame_sums: np.ndarray | None) -> np.ndarray:
        """``start_features(...) @ weights`` without the one-hot bases: one table lookup per base."""
        window, rest = _feature_parts(codes, start_at, orf_end, rank, frame_sums)
        width = sum(START_SITE)
        by_base = np.concatenate([self.weights[:4 * width].reshape(width, 4), np.zeros((width, 1))], 1)
        return by_base[np.arange(width), window].sum(1) + rest @ self.weights[4 * width:]


def learn_start_model(strands: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
                      starts: Sequence[str], stops: Sequence[str], min_length: int) -> tuple[StartModel | None, int]:
    """A start model fitted on the genes of any number of strands, each given as (codes read 5' -> 3',
    gene begins, gene ends, codon frame sums or None), and the number of genes it learnt from (None
    without any)."""
    features, orfs, chosen, n_genes = [], [], [], 0
    for codes, begin, end, frame_sums in strands:
        x, orf, called = start_examples(codes, begin, end, starts, stops, min_length, frame_sums)
        features.append(x), orfs.append(orf + n_genes), chosen.append(called)
        n_genes += int(called.sum())  # one per ORF, so the next strand's ORFs are numbered on from here
    if n_genes == 0:
        return None, 0
    return StartModel(fit_start_model(np.concatenate(features), np.concatenate(orfs), np.concatenate(chosen))), n_genes


def start_examples(codes: np.ndarray, begin: np.ndarray, end: np.ndarray, starts: Sequence[str],
                   stops: Sequence[str], min_length: int,
                   frame_sums: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training examples from the genes ``begin``..``end`` called on one strand: (features, orf, chosen)
    as :func:`fit_start_model` takes them, over the candidate starts of the genes' ORFs, numbered 0, 1, ...
    with one chosen start each. Genes without a start codon (running in from the sequence's 5' end) or
    sharing their stop with another gene's different start teach nothing."""
    start_at, orf_end, rank = candidate_starts(word_codes(codes, 3), starts, stops, min_length)
    called = pd.MultiIndex.from_arrays([orf_end, start_at]).isin(pd.MultiIndex.from_arrays([end, begin]))
    # ORFs with exactly one gene start (an annotation may give one stop two starts: isoforms).
    ends, counts = np.unique(orf_end[called], return_counts=True)
    taught = np.isin(orf_end, ends[counts == 1])
    start_at, orf_end, rank, called = start_at[taught], orf_end[taught], rank[taught], called[taught]
    orf = np.unique(orf_end, return_inverse=True)[1]
    return start_features(codes, start_at, orf_end, rank, frame_sums), orf, called


# ---------------------------------------------------------------- self-trained base log-odds (no annotation)

def start_site_windows(codes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), sum(START_SITE)) base codes around each start position (4 beyond the sequence's ends)."""
    upstream, downstream = START_SITE
    padded = np.concatenate([np.full(upstream, 4, np.uint8), codes, np.full(downstream, 4, np.uint8)])
    return padded[at[:, None] + np.arange(upstream + downstream)[None, :]]


def start_site_counts(codes: np.ndarray, begin: np.ndarray, end: np.ndarray, starts: Sequence[str],
                      stops: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, other): (sum(START_SITE), 5) base counts at each position around the starts of the genes
    ``begin``..``end`` of one strand (``codes``, read 5' -> 3') and around the other start codons of their ORFs."""
    width = sum(START_SITE)
    chosen, other = np.zeros((width, 5)), np.zeros((width, 5))
    words = word_codes(codes, 3)
    begin = begin[word_mask(words[begin], starts, 3)]  # genes running in from the sequence's 5' end have no start
    start_at, orf_end = orf_starts(words, starts, stops)
    alternative = np.isin(orf_end, end) & ~np.isin(start_at, begin)
    for counts, at in ((chosen, begin), (other, start_at[alternative])):
        windows = start_site_windows(codes, at)
        for position in range(width):
            counts[position] += np.bincount(windows[:, position], minlength=5)
    return chosen, other


def start_site_log_odds(views: Sequence[np.ndarray], genes: Sequence[tuple[np.ndarray, np.ndarray]],
                        starts: Sequence[str], stops: Sequence[str], pseudocount: float = 1.0) -> np.ndarray:
    """(sum(START_SITE), 5) log-odds of each base at each position around the given genes' starts
    against around the other start codons of the same ORFs (column 4, non-ACGT, is 0).

    ``views`` are the strands' base codes read 5' -> 3', ``genes`` the (begin, end) arrays called on
    each (any number of strands).
    """
    chosen, other = (sum(parts) for parts in zip(*(start_site_counts(codes, b, e, starts, stops)
                                                   for codes, (b, e) in zip(views, genes))))
    return start_site_table(chosen, other, pseudocount)


def start_site_table(chosen: np.ndarray, other: np.ndarray, pseudocount: float = 1.0) -> np.ndarray:
    chosen, other = chosen[:, :4] + pseudocount, other[:, :4] + pseudocount
    log_odds = np.log(chosen / chosen.sum(1, keepdims=True)) - np.log(other / other.sum(1, keepdims=True))
    return np.concatenate([log_odds, np.zeros((len(log_odds), 1))], axis=1)


def start_site_scores(codes: np.ndarray, table: np.ndarray, starts: Sequence[str], weight: float) -> np.ndarray:
    """(length,) ``weight`` x the summed :func:`start_site_log_odds` ``table`` around every start codon
    of a strand (0 elsewhere: only start codons are ever read)."""
    start_at = np.flatnonzero(word_mask(word_codes(codes, 3), starts, 3))
    scores = np.zeros(len(codes))
    scores[start_at] = weight * table[np.arange(table.shape[0]), start_site_windows(codes, start_at)].sum(1)
    return scores
