"""Gene calls from the gene model alone: per-base content scores and signal scores fed to the exact
event-driven Viterbi of :mod:`genoformer.decode.eukaryote`.

Path scores are log-likelihood ratios against the all-intergenic path (a generalised HMM with
explicit exon and intron lengths, which the decoder handles exactly):

* a coding base in frame f: log P_coding(base | 5 bases before, codon position) - log P_intergenic(...)
  + log q_exon - log(1 - 1/mean intergenic length);
* an intron base: the intron chain against the intergenic one, + log q_intron - log(1 - 1/mean
  intergenic length);
* each exon: its length's term by kind (single, initial, internal, terminal) and each intron its
  length's (:mod:`genoformer.genemodel.lengths`: smoothed training lengths up to a horizon, a
  geometric tail of rate q beyond it);
* a donor, acceptor, start or stop: its window's log-odds (``signal_weight`` times the fitted
  model's, or the counted WAM's: :mod:`genoformer.genemodel.signals`); a fitted start adds its rank
  in its open frame's weight (``signals.start_ranks``: the first start codon after an in-frame stop);
* each gene: log(mean intergenic length) (leaving the intergenic state), plus ``gene_penalty``;
  each intron ``intron_penalty``.

Complete genes that the model's pseudogene filter scores as look-alikes of the annotation's pseudogenes
and transposable-element genes are dropped after decoding (:mod:`genoformer.genemodel.pseudogenes`).

With ``explicit_lengths=False`` the lengths are geometric throughout instead (the rates from the
training means, introns ``min_intron`` plus a geometric tail; leaving an exon costs log(mean exon
length), an intron log(mean intron - min + 1)): the ablation. The two strands are
decoded separately, then of two genes overlapping on opposite strands the lower-scoring one is dropped.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from genoformer.decode.eukaryote import StrandGenes, StrandScores, decode_strand, signal_positions
from genoformer.decode.segments import (
    StrandSums, Transcript, encode_bases, prefix_sums, reverse_complement_codes, transcript_table,
)
from genoformer.genemodel.lengths import length_scores
from genoformer.genemodel.markov import ending_words, log_probabilities
from genoformer.genemodel.model import GeneModel
from genoformer.genemodel.pseudogenes import call_features, cds_positions
from genoformer.genemodel.settings import DecodeSettings
from genoformer.genemodel.signals import (
    FITTED_WINDOWS, START_RANKS, WINDOWS, log_odds_table, score_sites, start_ranks,
)
from genoformer.genome.intervals import Interval


# Called features have no probability score (GFF3 ".") where there are no class probabilities (the gene
# model alone); their genes carry the decoder's log-odds instead.
NO_PROBABILITIES = StrandSums(np.zeros((2, 0, 0)), ())


class ScoringTables:
    """The log-probability tables a :class:`GeneModel` implies with ``settings`` (None: the ones fitted for the
    model on validation regions, else the defaults), built once per model."""

    def __init__(self, model: GeneModel, settings: DecodeSettings | None = None):
        settings = settings or model.decoder or DecodeSettings()
        self.model, self.settings = model, settings
        null = log_probabilities(model.intergenic, model.pseudocount)  # (words + 1,)
        self.coding = (log_probabilities(model.coding, model.pseudocount) - null) * settings.coding_weight  # (3, words + 1)
        self.intron = log_probabilities(model.intron, model.pseudocount) - null  # (words + 1,)
        if settings.fitted_signals:
            tables, windows, rank_weights = model.fitted_signals, FITTED_WINDOWS, model.start_rank_weights
        else:
            tables = {kind: log_odds_table(model.signals[kind], model.background, model.pseudocount) for kind in WINDOWS}
            windows, rank_weights = WINDOWS, np.zeros(START_RANKS)
        self.signals = {kind: tables[kind] * settings.signal_weight for kind in WINDOWS}
        self.start_rank_weights = rank_weights * settings.signal_weight  # (START_RANKS,)
        self.signal_offsets = {kind: windows[kind][0] for kind in WINDOWS}
        introns = model.lengths["intron"]
        # The shortest 1% are rare enough that ruling them out costs less than a long geometric tail.
        self.min_intron = settings.min_intron or max(20, int(np.percentile(introns, 1)) if introns else 20)
        exon = model.mean_length("exon", 150.0)
        intron_excess = model.mean_length("intron", self.min_intron + 1.0) - self.min_intron + 1
        intergenic = model.mean_length("intergenic", 1000.0)
        stay_out = np.log1p(-1 / intergenic)
        if settings.explicit_lengths:  # leaving an exon or intron is priced by its length term
            self.lengths, exon_q, intron_q = length_scores(model.lengths, settings.exon_horizon,
                                                           settings.intron_horizon)
            self.coding_per_base, self.intron_per_base = exon_q - stay_out, intron_q - stay_out
            self.gene_penalty = np.log(intergenic) + settings.gene_penalty
            self.intron_penalty = settings.intron_penalty
        else:
            self.lengths = None
            self.coding_per_base = np.log1p(-1 / exon) - stay_out
            self.intron_per_base = np.log1p(-1 / intron_excess) - stay_out
            self.gene_penalty = np.log(intergenic) + np.log(exon) + settings.gene_penalty
            self.intron_penalty = np.log(exon) + np.log(intron_excess) + settings.intron_penalty
        if model.pseudogene_filter is not None:  # what its features compare with: chains, unweighted, and families
            self.filter_tables = (log_probabilities(model.coding, model.pseudocount), null,
                                  model.pseudogene_filter.lookalike_log_probabilities(model.pseudocount),
                                  model.pseudogene_filter.families)
        self.donors, self.acceptors = model.signal_words("donor"), model.signal_words("acceptor")
        self.starts, self.stops = tuple(model.start_codons), tuple(model.stop_codons)

    def strand_terms(self, codes: np.ndarray) -> StrandTerms:
        """The per-base terms and signal scores of one strand (``codes`` in strand coordinates)."""
        n = len(codes)
        words = ending_words(codes, self.model.order)  # (n,)
        by_position = self.coding[:, words]  # (3, n) log-odds of each base at codon position p
        invalid = words == self.coding.shape[1] - 1
        bases = np.arange(n)
        cds = np.stack([
            by_position[(bases - f) % 3, bases] + np.where(invalid, 0.0, self.coding_per_base) for f in range(3)
        ])  # (3, n) frame f: codons start at positions ≡ f
        intron = self.intron[words] + np.where(invalid, 0.0, self.intron_per_base)
        signals = {}
        candidates = self.candidates(codes)
        for kind, at in candidates.items():
            values = np.zeros(n + 1)
            values[at] = score_sites(codes, at, self.signals[kind], self.signal_offsets[kind])
            signals[kind] = values
        starts = candidates["start"]
        signals["start"][starts] += self.start_rank_weights[start_ranks(n, starts, candidates["stop"])[starts]]
        return StrandTerms(cds=cds, intron=intron, signals=signals)

    def strand_scores(self, codes: np.ndarray, evidence: StrandEvidence | None = None) -> StrandScores:
        """The decoder's terms for one strand (``codes`` in strand coordinates), plus ``evidence`` if given."""
        return self.strand_terms(codes).scores(evidence)

    def candidates(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Positions of each signal kind as the decoder finds them (boundaries, strand coordinates)."""
        return signal_positions(codes, starts=self.starts, stops=self.stops, donors=self.donors,
                                acceptors=self.acceptors)

    def decode(self, codes: np.ndarray, scores: StrandScores | None = None) -> StrandGenes:
        """Best genes of one strand (CDS pieces, strand coordinates), their partial flags, the path's score;
        ``scores``: the strand's (default: the gene model's alone, :meth:`strand_scores`)."""
        scores = self.strand_scores(codes) if scores is None else scores
        return decode_strand(codes, scores, start_codons=self.starts, stop_codons=self.stops,
                             donors=self.donors, acceptors=self.acceptors, min_exon=self.settings.min_exon,
                             min_intron=self.min_intron, gene_penalty=self.gene_penalty,
                             intron_penalty=self.intron_penalty, open_ends=self.settings.open_ends,
                             lengths=self.lengths)

    def transcripts(self, decoded: Sequence[StrandGenes], views: Sequence[np.ndarray]) -> list[Transcript]:
        """The genes of both strands (``decoded``: the + strand's, then the − strand's; ``views`` their codes,
        strand coordinates) as transcripts in forward coordinates, CDS only; too short ones dropped, complete
        ones the model's pseudogene filter calls look-alikes dropped, and unless ``strand_overlaps`` of two
        genes overlapping on opposite strands the lower-scoring one."""
        length = len(views[0])
        called = []  # (score, transcript)
        for strand, genes, view in zip(("+", "-"), decoded, views):
            lookalikes = self.lookalikes(view, genes)
            for cds, partial, score, lookalike in zip(genes.genes, genes.partial, genes.gene_scores, lookalikes):
                if lookalike or sum(e - s for s, e in cds) < self.settings.min_cds_length:
                    continue
                if strand == "-":  # forward coordinates: pieces reversed, the flag's 5' end is on the right
                    cds, partial = [(length - e, length - s) for s, e in cds[::-1]], partial[::-1]
                called.append((score, Transcript(strand=strand, cds=cds, partial=partial, log_odds=score)))
        if self.settings.strand_overlaps:
            return [transcript for _, transcript in called]
        return _without_strand_overlaps(called)

    def lookalikes(self, codes: np.ndarray, genes: StrandGenes) -> list[bool]:
        """Per gene of one strand (``codes`` in strand coordinates): whether the model's pseudogene filter drops
        it (complete genes only; all False without a filter)."""
        drop = [False] * len(genes.genes)
        complete = [k for k, partial in enumerate(genes.partial) if not partial]
        lookalike = self.model.pseudogene_filter
        if lookalike is None or not complete:
            return drop
        words = ending_words(codes, self.model.order)
        at = [cds_positions(genes.genes[k]) for k in complete]
        features = np.array([call_features(codes[cds], words[cds], len(genes.genes[k]), *self.filter_tables)
                             for k, cds in zip(complete, at)])
        for k, score in zip(complete, lookalike.scores(features)):
            drop[k] = bool(score > lookalike.threshold)
        return drop


class StrandEvidence(NamedTuple):
    """Extra terms one strand's path scores add, strand coordinates: per base (n,), ``cds`` on each coding
    base (every frame), ``intron`` on each intron base (e.g. a network's weighted log-odds); per boundary
    (n + 1,), ``signals`` on each site of a kind the path uses (e.g. a site network's, for donors and
    acceptors)."""

    cds: np.ndarray
    intron: np.ndarray
    signals: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class StrandTerms:
    """One strand's per-base gene-model terms before summing: ``cds`` (3, n) coding log-odds per frame,
    ``intron`` (n,), ``signals`` as :class:`StrandScores`' (n + 1,) per kind."""

    cds: np.ndarray
    intron: np.ndarray
    signals: dict[str, np.ndarray]

    def scores(self, evidence: StrandEvidence | None = None) -> StrandScores:
        """The decoder's prefix-summed scores, with ``evidence``'s terms added to each base."""
        cds, intron, signals = self.cds, self.intron, self.signals
        if evidence is not None:
            cds, intron = cds + evidence.cds, intron + evidence.intron
            signals = {kind: values + evidence.signals[kind] if evidence.signals and kind in evidence.signals
                       else values for kind, values in signals.items()}
        return StrandScores(cds=prefix_sums(cds), intron=prefix_sums(intron), signals=signals)


def gene_model_transcripts(sequence: str, model: GeneModel | ScoringTables, settings: DecodeSettings | None = None,
                           evidence: Sequence[StrandEvidence] | None = None) -> list[Transcript]:
    """Genes on both strands of ``sequence`` (forward coordinates), CDS only (no UTRs); genes running
    off the sequence carry ``partial`` flags (left edge, right edge). ``evidence``: extra terms for the
    + strand and the − strand (each in its strand's coordinates), added to the gene model's."""
    tables = model if isinstance(model, ScoringTables) else ScoringTables(model, settings)
    codes = encode_bases(sequence)
    views = (codes, reverse_complement_codes(codes))
    decoded = [tables.decode(view, tables.strand_scores(view, None if evidence is None else evidence[row]))
               for row, view in enumerate(views)]
    return tables.transcripts(decoded, views)


def _without_strand_overlaps(called: list[tuple[float, Transcript]]) -> list[Transcript]:
    """The genes left after dropping, best score first, each gene that overlaps a kept one on the other strand."""
    # Kept genes of one strand never overlap, so sorted by start their ends are sorted too: a gene
    # overlaps one of them exactly when it overlaps the last one starting before its end.
    starts: dict[str, list[int]] = {"+": [], "-": []}
    ends: dict[str, list[int]] = {"+": [], "-": []}
    kept: list[Transcript] = []
    for _, transcript in sorted(called, key=lambda item: -item[0]):
        other = "-" if transcript.strand == "+" else "+"
        before = bisect_left(starts[other], transcript.end)
        if before and ends[other][before - 1] > transcript.start:
            continue
        at = bisect_left(starts[transcript.strand], transcript.start)
        starts[transcript.strand].insert(at, transcript.start)
        ends[transcript.strand].insert(at, transcript.end)
        kept.append(transcript)
    return sorted(kept, key=lambda t: (t.start, t.strand))


def decode_with_gene_model(genome, model: GeneModel | ScoringTables, regions: Iterable[Interval],
                           settings: DecodeSettings | None = None, *, id_prefix: str | None = None,
                           evidence: Callable[[Interval], tuple[Sequence[StrandEvidence], StrandSums]] | None = None,
                           ) -> pd.DataFrame:
    """An annotation table (``read_annotation``'s columns) of the genes called in each region of ``genome``.
    Feature IDs begin with ``id_prefix`` (default: the region, ``name_start``). ``evidence(region)``, if
    given, gives the region's extra terms per strand (:func:`gene_model_transcripts`) and the class
    probability sums that score its features (else feature scores are 0)."""
    tables = model if isinstance(model, ScoringTables) else ScoringTables(model, settings)
    tables_out = []
    for region in regions:
        extra, sums = evidence(region) if evidence is not None else (None, NO_PROBABILITIES)
        transcripts = gene_model_transcripts(genome.fetch(region.name, region.start, region.end), tables,
                                             evidence=extra)
        table = transcript_table(region.name, transcripts, sums, id_prefix=id_prefix or f"{region.name}_{region.start}")
        table["start"] += region.start
        table["end"] += region.start
        tables_out.append(table)
    return pd.concat(tables_out, ignore_index=True) if tables_out else transcript_table("", [], NO_PROBABILITIES)
