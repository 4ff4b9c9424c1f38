"""Fits that decode with the gene model: its pseudogene filter, learned from its own calls on the training
regions (:func:`fit_pseudogene_filter`), and choosing on validation regions: the objective, scoring calls
quickly on a long chromosome, the coordinate search, and the decoder's settings fitted with it.

Two fits maximise :data:`OBJECTIVE` of the project's evaluator on a gene model's validation regions,
each by :func:`coordinate_search`: first the decoder's settings for the gene model alone
(:func:`fit_decode_settings`; ``genoformer gene-model --val-regions``, stored in the gene model's file),
then, with those fixed, the weights of the networks' evidence
(:func:`genoformer.genemodel.evidence.fit_evidence_weights`; ``genoformer combine``). Fitting and
scoring on the same regions is optimistic: score the result on other regions.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from genoformer.decode.segments import Transcript, encode_bases, reverse_complement_codes, transcript_table
from genoformer.errors import ConfigError
from genoformer.genemodel.decode import NO_PROBABILITIES, ScoringTables, gene_model_transcripts
from genoformer.genemodel.markov import count_words, ending_words, log_probabilities
from genoformer.genemodel.model import GeneModel
from genoformer.genemodel.pseudogenes import (
    CROSS_FIT_BLOCK, DEFAULT_SHARE, MIN_CALLS, PseudogeneFilter, call_features, cds_positions, fit_logistic,
    lookalike_spans, protein_words,
)
from genoformer.genemodel.settings import DecodeSettings
from genoformer.genemodel.training import coding_transcripts
from genoformer.genome.intervals import Interval

OBJECTIVE = "mean of nucleotide CDS F1, CDS exon F1 and gene F1"
# The decoder's settings fitted on validation and the values tried for each, around the A. thaliana defaults
# (gene penalty 5, intron penalty 4.5, coding weight 1, signal weight 1.4). On the C. elegans slices'
# chromosome IV the defaults scored 0.850 / 0.700 / 0.250 and coding weight 1.2 alone 0.882 / 0.752 / 0.286.
DECODER_GRID = {"coding_weight": (0.8, 0.9, 1.0, 1.1, 1.2, 1.4), "signal_weight": (1.0, 1.2, 1.4, 1.6),
                "gene_penalty": (3.0, 4.0, 5.0, 6.0, 7.0), "intron_penalty": (2.5, 3.5, 4.5, 5.5)}
# Fewer validation transcripts than this: the fit chases noise. On the C. elegans slices (55 on chromosome IV)
# it lifted IV's scores from 0.850 / 0.700 / 0.250 to 0.886 / 0.768 / 0.286 and lowered V's from 0.891 / 0.656
# / 0.157 to 0.870 / 0.638 / 0.125.
FEW_VALIDATION_TRANSCRIPTS = 200


def coordinate_search(start, grid: dict[str, Sequence], score: Callable[[object], float], *, rounds: int,
                      prefer: Callable[[object], float] | None = None,
                      skip: Callable[[object, str], bool] | None = None):
    """The best point found from ``start`` (a frozen dataclass) by ``score`` (higher is better): each field
    of ``grid`` in turn takes the best of its values with the others held, for ``rounds`` rounds at most
    (fewer once a round changes nothing). Ties go to the larger ``prefer(point)``, then to the value tried
    first; ``skip(best, name)`` leaves that field alone this time (a setting that changes nothing there)."""
    best = start
    score(best)
    for _ in range(rounds):
        before = best
        for name, values in grid.items():
            if skip is not None and skip(best, name):
                continue
            candidates = [replace(best, **{name: value}) for value in values]
            best = max(candidates + [best], key=lambda point: (score(point), prefer(point) if prefer else 0))
        if best == before:
            break
    return best


def summary_scores(scores: dict) -> dict:
    """The three F1s the fits maximise (and their mean, the objective) from an ``evaluate`` result."""
    found = {"nucleotide_cds_f1": scores["nucleotide"]["coding"]["f1"], "exon_f1": scores["exon"]["f1"],
             "gene_f1": scores["gene"]["f1"]}
    out = {name: float(value or 0.0) for name, value in found.items()}  # None (nothing called): 0
    out["objective"] = float(np.mean(list(out.values())))
    return out


def regional_scores(reference: pd.DataFrame, prediction: pd.DataFrame, regions: Sequence[Interval],
                    lengths: dict[str, int], margin: int = 200_000) -> dict:
    """``evaluate(reference, prediction, lengths=lengths, regions=regions, prokaryote=False)``'s
    :func:`summary_scores`, computed
    on each record's stretch around the regions (``margin`` bases either side) rather than the whole record.

    The evaluator's nucleotide counts build whole-record tracks: a minute per call on a 30 Mb chromosome,
    which a search repeats dozens of times. Its counts only depend on features touching the
    regions and on positions relative to one another, so the features lying wholly in each stretch are
    moved to its start; features crossing a stretch's edge are dropped (a gene longer than ``margin``
    that reaches a region would be scored differently)."""
    from genoformer.evaluate import evaluate

    windows = {}
    for iv in regions:
        lo, hi = windows.get(iv.name, (iv.start, iv.end))
        windows[iv.name] = (min(lo, iv.start), max(hi, iv.end))
    windows = {name: (max(0, lo - margin), min(lengths[name], hi + margin)) for name, (lo, hi) in windows.items()}

    def local(table: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for name, (lo, hi) in windows.items():
            rows = table[(table["seqid"] == name) & (table["start"] >= lo) & (table["end"] <= hi)]
            parts.append(rows.assign(start=rows["start"] - lo, end=rows["end"] - lo))
        return pd.concat(parts) if parts else table.iloc[:0]

    shifted = [Interval(iv.name, iv.start - windows[iv.name][0], iv.end - windows[iv.name][0]) for iv in regions]
    return summary_scores(evaluate(local(reference), local(prediction), lengths={
        name: hi - lo for name, (lo, hi) in windows.items()}, regions=shifted, prokaryote=False))


def score_calls(annotation: pd.DataFrame, regions: Sequence[Interval], calls: Sequence[Sequence[Transcript]],
                lengths: dict[str, int]) -> dict:
    """:func:`regional_scores` of the transcripts called in each region (``calls[k]``: region k's, in its
    coordinates) against ``annotation``."""
    tables = []
    for k, (iv, transcripts) in enumerate(zip(regions, calls)):
        table = transcript_table(iv.name, list(transcripts), NO_PROBABILITIES, id_prefix=f"fit{k}")
        table[["start", "end"]] += iv.start
        tables.append(table)
    return regional_scores(annotation, pd.concat(tables, ignore_index=True), regions, lengths)


@dataclass
class SettingsFit:
    """What :func:`fit_decode_settings` found: the best settings, their scores, every trial's."""

    settings: DecodeSettings
    scores: dict  # the evaluator's nucleotide / exon / gene F1 and the objective, at the best settings
    trials: list[dict] = field(default_factory=list)  # {"settings": the grid's fields, ...scores} in the order tried

    def report(self, regions: Sequence[Interval]) -> dict:
        """Lines for the gene model's ``report``: where the settings were fitted and what they scored there."""
        return {"decoder fitted on": ", ".join(f"{iv.name}:{iv.start}-{iv.end}" for iv in regions),
                "decoder trials": len(self.trials),
                **{f"decoder validation {name}": round(value, 4) for name, value in self.scores.items()}}


def fit_decode_settings(genome, annotation: pd.DataFrame, regions: Sequence[Interval], model: GeneModel, *,
                        grid: dict | None = None, rounds: int = 2,
                        progress: Callable[[str], None] | None = None) -> SettingsFit:
    """The decoder's settings for ``model`` alone (no network) that maximise :data:`OBJECTIVE` on ``regions``
    of ``genome`` against ``annotation`` (``read_annotation``): a coordinate search over ``grid`` (default
    :data:`DECODER_GRID`) from the model's settings (its fitted ones, else the defaults), which it therefore
    never scores below there; of equal scores, the one nearest where it started (the smallest sum of the
    settings' distances from their starting values)."""
    grid = dict(DECODER_GRID if grid is None else grid)
    unknown = set(grid) - {f.name for f in fields(DecodeSettings)}
    if unknown:
        raise ConfigError(f"decoder search grid names unknown settings {sorted(unknown)}")
    if not regions:
        raise ConfigError("fitting the decoder's settings needs at least one validation region")
    transcripts = check_validation_regions(annotation, regions)
    if transcripts < FEW_VALIDATION_TRANSCRIPTS:
        warnings.warn(f"fitting the decoder's settings on only {transcripts} coding transcripts (fewer than "
                      f"{FEW_VALIDATION_TRANSCRIPTS}): on so few the best settings are noisy and may score below the "
                      "defaults elsewhere; validate on more of the genome if you can")
    sequences = [genome.fetch(iv.name, iv.start, iv.end) for iv in regions]
    start = model.decoder or DecodeSettings()
    tried: dict[DecodeSettings, dict] = {}
    trials: list[dict] = []

    def score(settings: DecodeSettings) -> float:
        if settings not in tried:
            tables = ScoringTables(model, settings)
            calls = [gene_model_transcripts(sequence, tables) for sequence in sequences]
            tried[settings] = score_calls(annotation, regions, calls, genome.lengths)
            trials.append({"settings": {name: getattr(settings, name) for name in grid}, **tried[settings]})
            if progress:
                progress(f"decoder settings {trials[-1]['settings']}: {tried[settings]}")
        return tried[settings]["objective"]

    best = coordinate_search(start, grid, score, rounds=rounds,
                             prefer=lambda s: -sum(abs(getattr(s, name) - getattr(start, name)) for name in grid))
    return SettingsFit(settings=best, scores=tried[best], trials=trials)


def check_validation_regions(annotation: pd.DataFrame, regions: Sequence[Interval]) -> int:
    """How many coding transcripts of ``annotation`` lie wholly inside ``regions`` (each counted once); refused
    when none does (checked before a gene model is learned, so a wrong BED fails at once)."""
    inside = set()
    for iv in regions:
        spans = coding_transcripts(annotation, iv.name).groupby("transcript")[["start", "end"]].agg(
            {"start": "min", "end": "max"})
        inside.update(spans.index[(spans["start"] >= iv.start) & (spans["end"] <= iv.end)])
    if not inside:
        raise ConfigError(f"{annotation.attrs.get('path', 'the annotation')}: the validation regions ("
                          + ", ".join(f"{iv.name}:{iv.start}-{iv.end}" for iv in regions)
                          + ") hold no annotated coding transcript to fit the decoder's settings on: give regions "
                            "with coding genes")
    return len(inside)


def fitted_decoder(model: GeneModel, genome, annotation: pd.DataFrame, regions: Sequence[Interval], *,
                   progress: Callable[[str], None] | None = None) -> GeneModel:
    """``model`` with its decoder's settings fitted on ``regions`` (:func:`fit_decode_settings`) and the fit
    in its report."""
    fit = fit_decode_settings(genome, annotation, regions, model, progress=progress)
    return replace(model, decoder=fit.settings, report={**model.report, **fit.report(regions)})


def fit_pseudogene_filter(model: GeneModel, genome, annotation: pd.DataFrame, regions: Sequence[Interval], *,
                          share: float = DEFAULT_SHARE, progress: Callable[[str], None] | None = None) -> GeneModel:
    """``model`` with a :class:`~genoformer.genemodel.pseudogenes.PseudogeneFilter` learned on its training
    ``regions`` of ``genome``: the look-alike chain counted over ``annotation``'s pseudogenes and transposable
    elements there, then the model's own complete calls there (decoded alone, without a filter) labelled as on
    an annotated gene (a CDS base on one of the same strand) or a look-alike (no such base, at least half its
    CDS inside look-alike features), and the regression fitted between them. With fewer than ``MIN_CALLS``
    of either kind the model is returned without a filter, the report saying why; ``share`` 0: no filter.

    The look-alike families are the protein words of the look-alike calls. A call's look-alike features are
    read with the chain and families learned on the other half of the training sequence (alternate
    ``CROSS_FIT_BLOCK``-base blocks of each record; a call's half is its first CDS base's, so the few calls
    across a block boundary read a chain that counted their bases past it): read with a chain
    that counted the call's own bases, a look-alike looks more like one than any call on new sequence will,
    and the regression would lean on that (on a 1 Mb slice of A. thaliana chromosome 1, trained on 600 kb,
    it dropped two thirds of the training look-alikes and one of 43 on the rest)."""
    if not 0 <= share < 1:
        raise ConfigError(f"the pseudogene filter's share of training genes to give up must be in [0, 1), got {share!r}")
    model = replace(model, pseudogene_filter=None)
    if share == 0:
        return replace(model, report={**model.report, "pseudogene filter": "off"})
    halves = np.zeros((2, 4 ** (model.order + 1)), np.int64)  # the look-alike chain's counts per half
    for region in regions:  # two passes over the regions, so that only one region's masks are held at once
        for stretch in _filter_stretches(genome, annotation, region, model.order):
            for h in (0, 1):
                halves[h] += count_words(stretch.words, stretch.chain_bases & (stretch.half == h), model.order)
    if not halves.sum():
        return replace(model, report={**model.report, "pseudogene filter": "not fitted (no pseudogene or "
                                                                           "transposable-element bases in the training regions)"})
    tables = ScoringTables(model)
    calls = []  # per labelled call: label (1: look-alike), cross-fit half, its spliced CDS's codes and words, exons
    for region in regions:
        for stretch in _filter_stretches(genome, annotation, region, model.order):
            decoded = tables.decode(stretch.codes)
            for pieces, partial in zip(decoded.genes, decoded.partial):
                at = cds_positions(pieces)
                if partial or len(at) < tables.settings.min_cds_length:  # never filtered, or dropped anyway
                    continue
                if stretch.cds_bases[at].any():
                    label = 0
                elif stretch.lookalike_bases[at].mean() >= 0.5:
                    label = 1
                else:
                    continue
                calls.append((label, stretch.half[at[0]], stretch.codes[at], stretch.words[at].astype(np.int32),
                              len(pieces)))
    labels = np.array([label for label, *_ in calls])
    found = {"genes": int((labels == 0).sum()), "look-alikes": int((labels == 1).sum())}
    report = {**model.report, "pseudogene filter training calls": f"{found['genes']} on genes, "
                                                                   f"{found['look-alikes']} look-alikes"}
    if min(found.values()) < MIN_CALLS:
        return replace(model, report={**report, "pseudogene filter": f"not fitted (fewer than {MIN_CALLS} training "
                                                                     "calls of a kind)"})
    families = [np.unique(np.concatenate([protein_words(codes) for label, half, codes, *_ in calls
                                          if label == 1 and half == h] or [np.zeros(0, np.int64)])) for h in (0, 1)]
    coding = log_probabilities(model.coding, model.pseudocount)  # (3, words + 1)
    intergenic = log_probabilities(model.intergenic, model.pseudocount)  # (words + 1,)
    other_half = [(log_probabilities(halves[1 - h], model.pseudocount), families[1 - h]) for h in (0, 1)]
    features = np.array([call_features(codes, words, exons, coding, intergenic, *other_half[half])
                         for _, half, codes, words, exons in calls])
    center, scale, weights = fit_logistic(features, labels)
    fitted = PseudogeneFilter(counts=halves.sum(axis=0), families=np.union1d(*families), center=center, scale=scale,
                              weights=weights, threshold=0.0, share=share)
    scores = fitted.scores(features)
    threshold = float(np.quantile(scores[labels == 0], 1 - share))
    # (with few gene calls the quantile still drops one of them: the report gives the shares measured)
    dropped = {kind: float((scores[labels == label] > threshold).mean()) for kind, label in (("look-alikes", 1), ("genes", 0))}
    if progress:
        progress(f"pseudogene filter: drops {dropped['look-alikes']:.1%} of {found['look-alikes']} training look-alike "
                 f"calls and {dropped['genes']:.1%} of {found['genes']} gene calls")
    return replace(model, pseudogene_filter=replace(fitted, threshold=threshold),
                   report={**report, "pseudogene filter": f"drops {dropped['look-alikes']:.3f} of training look-alikes, "
                                                          f"{dropped['genes']:.3f} of training genes"})


class _FilterStretch(NamedTuple):
    """One strand of a training region as the pseudogene filter's fit reads it, strand coordinates (n,):
    ``codes`` and their Markov ``words``; ``chain_bases`` the look-alike bases of this strand outside every
    coding transcript (what the chain counts); ``lookalike_bases`` those of either strand and ``cds_bases``
    this strand's annotated CDS (what labels a call); ``half`` each base's cross-fit half (uint8)."""

    codes: np.ndarray
    words: np.ndarray
    chain_bases: np.ndarray
    lookalike_bases: np.ndarray
    cds_bases: np.ndarray
    half: np.ndarray


def _filter_stretches(genome, annotation: pd.DataFrame, region: Interval, order: int):
    """The two strands of ``region`` (+ then −) as :class:`_FilterStretch` es."""
    codes = encode_bases(genome.fetch(region.name, region.start, region.end))
    n = len(codes)
    masks = {kind: {strand: np.zeros(n, bool) for strand in "+-"} for kind in ("lookalike", "cds", "coding_span")}
    pieces = coding_transcripts(annotation, region.name)
    extents = pieces.groupby("transcript").agg(start=("start", "min"), end=("end", "max"), strand=("strand", "first"))
    for kind, table in (("lookalike", lookalike_spans(annotation, region.name)), ("cds", pieces), ("coding_span", extents)):
        for start, end, strand in zip(table["start"] - region.start, table["end"] - region.start, table["strand"]):
            if strand in ("+", "-") and end > 0 and start < n:
                masks[kind][strand][max(start, 0):min(end, n)] = True
    half = (((region.start + np.arange(n)) // CROSS_FIT_BLOCK) % 2).astype(np.uint8)  # (n,) forward coordinates
    outside_genes = ~(masks["coding_span"]["+"] | masks["coding_span"]["-"])
    lookalike_either = masks["lookalike"]["+"] | masks["lookalike"]["-"]
    for row, strand in enumerate("+-"):
        flip = (lambda m: m) if row == 0 else (lambda m: m[::-1])
        view = codes if row == 0 else reverse_complement_codes(codes)
        yield _FilterStretch(codes=view, words=ending_words(view, order),
                             chain_bases=flip(masks["lookalike"][strand] & outside_genes),
                             lookalike_bases=flip(lookalike_either), cds_bases=flip(masks["cds"][strand]), half=flip(half))
