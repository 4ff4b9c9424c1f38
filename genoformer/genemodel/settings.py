"""The decoder's settings: the knobs on top of what a gene model learned (penalties, weights, horizons).

Their defaults were chosen on A. thaliana. For another species ``genoformer gene-model --val-regions``
fits the main ones on its validation regions (:func:`genoformer.genemodel.fitting.fit_decode_settings`)
and stores them in the gene model's file (its ``decoder`` field, read back by :meth:`DecodeSettings.from_dict`),
where ``annotate`` and ``combine`` use them.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NoReturn

# Lengths and horizons a stored setting may hold: the length tables are built up to the horizons.
MAX_BASES = 100_000


@dataclass(frozen=True)
class DecodeSettings:
    """Knobs on top of what the model learned (zero penalties and unit weights: the learned GHMM as it is).

    Defaults were chosen on A. thaliana chromosome 1 validation (train 0-24 Mb, score 24-27 Mb). With
    geometric lengths the learned GHMM called too many genes and introns: nucleotide CDS / exon / gene F1
    0.935 / 0.755 / 0.443 with penalties 0, weights 1 and overlaps kept, 0.954 / 0.805 / 0.554 with
    gene_penalty 5, intron_penalty 3, signal_weight 1.2. Explicit lengths then gave 0.957 / 0.821 / 0.594,
    and with intron_penalty 4.5 and horizons 1,000 / 600 bases 0.959 / 0.832 / 0.625. Fitted signal
    models: 0.960 / 0.846 / 0.674, and with signal_weight 1.4 0.962 / 0.850 / 0.684. The start's rank in its
    open frame, fitted with the start model: 0.963 / 0.854 / 0.704.
    """

    min_exon: int = 3
    min_intron: int | None = None  # None: the 1st percentile of training introns, at least 20
    min_cds_length: int = 60
    coding_weight: float = 1.0  # scales the coding-vs-intergenic log-odds
    signal_weight: float = 1.4  # scales the signal models' log-odds
    fitted_signals: bool = True  # the signal models fitted against decoys; False: the counted WAMs
    gene_penalty: float = 5.0  # added to the learned cost of each gene (nats)
    intron_penalty: float = 4.5  # added to the learned cost of each intron (nats)
    open_ends: bool = True  # genes may run off either end of a sequence (partial genes)
    # Exon (by kind) and intron lengths from their training distributions up to these horizons, a
    # geometric tail beyond (``genemodel.lengths``); False: geometric throughout, with the training means.
    explicit_lengths: bool = True
    exon_horizon: int = 1000
    intron_horizon: int = 600
    # Keep genes on opposite strands that overlap (else the lower-scoring one goes: each strand is
    # decoded on its own, so a gene's antisense shadow can be called too; real overlaps are rare).
    strand_overlaps: bool = False

    @classmethod
    def from_dict(cls, data, fail: Callable[[str, str], NoReturn]) -> "DecodeSettings":
        """Settings from a mapping of every field (as ``dataclasses.asdict`` writes them); anything else is
        refused through ``fail(field, why)``."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict):
            fail("decoder", f"must map the settings {names} to their values")
        unknown, missing = sorted(set(data) - set(names)), [name for name in names if name not in data]
        if unknown or missing:
            fail("decoder", " and ".join(f"{kind} {found}" for kind, found in (("unknown", unknown), ("missing", missing))
                                         if found))
        defaults, values = cls(), {}
        for name in names:
            value, default = data[name], getattr(defaults, name)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):  # weights >= 0; penalties any finite number of nats
                try:
                    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
                          and (value >= 0 or not name.endswith("_weight")))
                except OverflowError:
                    ok = False
                value = float(value) if ok else value
            else:  # whole numbers of bases; min_intron may be None (taken from the training introns)
                ok = (value is None and name == "min_intron") or (
                    isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_BASES)
            if not ok:
                fail(f"decoder.{name}", f"{value!r} is not a valid value (the default is {default!r})")
            values[name] = value
        return cls(**values)
