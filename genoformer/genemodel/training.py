"""Training examples for the gene model: one coding transcript per gene, checked against the sequence,
turned into per-base labels and counts (Markov words, signal windows, lengths).

Per training region and strand, every base gets a label in strand coordinates: CODING + p (codon
position p = 0, 1, 2 along the transcript) and INTRON for the chosen transcripts, INTERGENIC outside
every coding transcript's CDS span on the same strand, and UNUSED elsewhere (other isoforms, genes
that failed the checks). UTRs and the other strand's genes count as intergenic, since a strand's
OUT state in the decoder holds them (learning them as non-coding makes the antisense "shadow" of a
gene score low: on A. thaliana validation, nucleotide CDS F1 0.930 -> 0.949, gene F1 0.503 -> 0.528).
Genes must lie wholly inside a region.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from genoformer.decode.eukaryote import signal_positions
from genoformer.decode.segments import reverse_complement_codes, word_codes, word_index
from genoformer.errors import AnnotationError
from genoformer.genemodel.markov import count_words, ending_words
from genoformer.genemodel.signals import (
    DECOY_FLANK, FITTED_WINDOWS, WINDOWS, count_sites, start_ranks, window_pairs,
)
from genoformer.genome.annotation_table import marked_pseudo, parent_lists
from genoformer.genome.intervals import Interval

UNUSED, INTERGENIC, INTRON, CODING = -1, 0, 1, 2
_CDS_TYPES = ("CDS", "stop_codon")  # GTF leaves the stop codon out of CDS rows
_LETTERS = "ACGT"

# Why a gene's CDS does not fit the sequence (see _check); in a good annotation few genes fail (A. thaliana
# chromosome 1, 0-24 Mb: 20 of 5,440), so when most do, the annotation does not belong to this FASTA.
_MISFITS = ("CDS length not a multiple of 3", "no start codon", "no stop codon", "in-frame stop codon")
MAX_MISFIT_SHARE = 0.5
CANONICAL_INTRONS = ("GT-AG", "GC-AG", "AT-AC")
MIN_CANONICAL_SHARE = 0.5  # A. thaliana: 99% of introns are GT-AG or GC-AG
FEW_GENES = 200  # fewer training genes than this: the counts are thin, say so

# The lengths counted in training, one list each.
LENGTH_KINDS = ("intron", "single_exon", "initial_exon", "internal_exon", "terminal_exon", "intergenic")


@dataclass
class TrainingCounts:
    """Everything the gene model learns from, summed over regions and strands."""

    order: int
    coding: np.ndarray = None  # (3, 4 ** (order + 1)) words ending at codon position p
    intron: np.ndarray = None  # (4 ** (order + 1),)
    intergenic: np.ndarray = None  # (4 ** (order + 1),)
    background: np.ndarray = None  # (4, 4) (previous base, base) in intergenic DNA
    signals: dict = field(default_factory=dict)  # kind -> (width, 4, 4) window counts
    donors: Counter = field(default_factory=Counter)  # an intron's first two bases
    acceptors: Counter = field(default_factory=Counter)  # its last two
    introns: Counter = field(default_factory=Counter)  # "GT-AG": an intron's first and last two bases
    starts: Counter = field(default_factory=Counter)
    stops: Counter = field(default_factory=Counter)
    lengths: dict = field(default_factory=lambda: {name: [] for name in LENGTH_KINDS})
    report: Counter = field(default_factory=Counter)  # genes used, and skipped per reason
    # For the fitted signal models, per kind: pair codes (sites, width) of the true sites in the counted
    # window and in the fitted one, and of the decoys in the fitted one (uint8, one array per strand).
    site_windows: dict = field(default_factory=lambda: {kind: [] for kind in WINDOWS})
    fitted_site_windows: dict = field(default_factory=lambda: {kind: [] for kind in WINDOWS})
    decoy_windows: dict = field(default_factory=lambda: {kind: [] for kind in WINDOWS})
    # The start sites' and start decoys' ranks in their open frames (signals.start_ranks), one array per strand.
    start_ranks: dict = field(default_factory=lambda: {"true": [], "decoy": []})

    def __post_init__(self):
        words = 4 ** (self.order + 1)
        self.coding = np.zeros((3, words), np.int64)
        self.intron = np.zeros(words, np.int64)
        self.intergenic = np.zeros(words, np.int64)
        self.background = np.zeros((4, 4), np.int64)
        self.signals = {kind: np.zeros((width, 4, 4), np.int64) for kind, (_, width) in WINDOWS.items()}


def coding_transcripts(annotation: pd.DataFrame, name: str) -> pd.DataFrame:
    """CDS pieces of the coding transcripts of record ``name``: columns transcript, gene, strand, start, end."""
    return transcript_pieces(annotation, name, _CDS_TYPES, pseudo=False)


def transcript_pieces(annotation: pd.DataFrame, name: str, types: tuple[str, ...], *, pseudo: bool) -> pd.DataFrame:
    """Rows of ``types`` (e.g. CDS, exon) of record ``name`` grouped by transcript: columns transcript,
    gene, strand, start, end; rows marked ``pseudo=true`` only if ``pseudo``."""
    rows = annotation[(annotation["seqid"] == name) & annotation["type"].isin(types)]
    if not pseudo:
        marked = rows["attributes"].map(marked_pseudo)
        rows = rows[~marked.to_numpy(dtype=bool)]
    # An ID may hold an (escaped) comma: split Parent against the table's known IDs.
    parents = parent_lists([p if isinstance(p, str) and p else None for p in rows["parent"]], annotation["id"].tolist())
    first_parent = pd.Series([listed[0] if listed else None for listed in parents], index=rows.index, dtype=object)
    transcript = rows["transcript_id"].where(rows["transcript_id"].notna(), first_parent)
    transcript = transcript.where(transcript.notna(), rows["id"])
    gene = rows["gene_id"].where(rows["gene_id"].notna(), transcript)
    table = pd.DataFrame({"transcript": transcript.to_numpy(object), "gene": gene.to_numpy(object),
                          "strand": rows["strand"].to_numpy(object), "start": rows["start"].to_numpy(np.int64),
                          "end": rows["end"].to_numpy(np.int64)})
    return table[table["transcript"].notna()].reset_index(drop=True)


def merged_pieces(pieces: np.ndarray) -> list[tuple[int, int]]:
    """Sorted pieces with touching or overlapping ones merged (a GTF stop_codon next to its CDS)."""
    merged: list[list[int]] = []
    for s, e in sorted(pieces.tolist()):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _codon_set(words) -> set[int]:
    return {word_index(w) for w in words}


def _check(spliced: np.ndarray, starts: set[int], stops: set[int]) -> str | None:
    """Why a spliced CDS (strand codes) is not a complete gene, or None."""
    if len(spliced) % 3:
        return "CDS length not a multiple of 3"
    codons = word_codes(spliced, 3)[::3]
    if codons[0] not in starts:
        return "no start codon"
    if codons[-1] not in stops:
        return "no stop codon"
    if any(int(c) in stops for c in codons[:-1]):
        return "in-frame stop codon"
    if (spliced > 3).any():
        return "N in the CDS"
    return None


def add_region(counts: TrainingCounts, codes: np.ndarray, pieces: pd.DataFrame, offset: int,
               start_codons, stop_codons) -> None:
    """Add one region (forward ``codes`` starting at record position ``offset``; ``pieces`` from
    :func:`coding_transcripts`, already restricted to transcripts inside the region)."""
    n = len(codes)
    starts, stops = _codon_set(start_codons), _codon_set(stop_codons)
    views = {"+": codes, "-": reverse_complement_codes(codes)}
    labels = {strand: np.full(n, INTERGENIC, np.int8) for strand in views}
    spans = pieces.groupby("transcript").agg(start=("start", "min"), end=("end", "max"), strand=("strand", "first"))
    for s, e, strand in zip(spans["start"] - offset, spans["end"] - offset, spans["strand"]):
        if strand in labels:
            labels[strand][s:e] = UNUSED
    labels["-"] = labels["-"][::-1].copy()  # strand coordinates from here on
    sites = {kind: {strand: [] for strand in views} for kind in WINDOWS}
    gene_spans = {strand: [] for strand in views}
    for _, gene in _longest_per_gene(pieces).groupby("transcript", sort=False):
        strand = gene["strand"].iloc[0]
        if strand not in views:
            counts.report["skipped: no strand"] += 1
            continue
        forward = merged_pieces(gene[["start", "end"]].to_numpy() - offset)
        exons = forward if strand == "+" else [(n - e, n - s) for s, e in forward[::-1]]
        view = views[strand]
        spliced = np.concatenate([view[s:e] for s, e in exons])
        problem = _check(spliced, starts, stops)
        if problem:
            counts.report[f"skipped: {problem}"] += 1
            continue
        counts.report["genes used"] += 1
        _paint(labels[strand], exons)
        gene_spans[strand].append((exons[0][0], exons[-1][1]))
        sites["start"][strand].append(exons[0][0])
        sites["stop"][strand].append(exons[-1][1] - 3)
        for (_, donor), (acceptor, _) in zip(exons, exons[1:]):
            sites["donor"][strand].append(donor)
            sites["acceptor"][strand].append(acceptor)
            donor_word, acceptor_word = _word(view[donor:donor + 2]), _word(view[acceptor - 2:acceptor])
            counts.donors[donor_word] += 1
            counts.acceptors[acceptor_word] += 1
            counts.introns[f"{donor_word}-{acceptor_word}"] += 1
            counts.lengths["intron"].append(acceptor - donor)
        counts.starts[_word(spliced[:3])] += 1
        counts.stops[_word(spliced[-3:])] += 1
        _add_exon_lengths(counts.lengths, exons)
    for strand, view in views.items():
        candidates = signal_positions(view, starts=start_codons, stops=stop_codons, donors=("GT", "GC"),
                                      acceptors=("AG",))  # where the decoder will look for each kind
        _count_strand(counts, view, labels[strand], {kind: np.array(sites[kind][strand], np.int64) for kind in WINDOWS},
                      candidates)
        ordered = sorted(gene_spans[strand])
        counts.lengths["intergenic"].extend(b[0] - a[1] for a, b in zip(ordered, ordered[1:]) if b[0] > a[1])


def _longest_per_gene(pieces: pd.DataFrame) -> pd.DataFrame:
    """The pieces of each gene's transcript with the longest CDS (ties: the first by name)."""
    totals = (pieces.assign(length=pieces["end"] - pieces["start"])
              .groupby(["gene", "transcript"], as_index=False)["length"].sum()
              .sort_values(["gene", "length", "transcript"], ascending=[True, False, True]))
    chosen = set(totals.drop_duplicates("gene")["transcript"])
    return pieces[pieces["transcript"].isin(chosen)]


def _word(codes: np.ndarray) -> str:
    return "".join(_LETTERS[c] if c < 4 else "N" for c in codes.tolist())


def _paint(labels: np.ndarray, exons: list[tuple[int, int]]) -> None:
    done = 0
    for k, (s, e) in enumerate(exons):
        labels[s:e] = CODING + (np.arange(done, done + e - s) % 3)
        done += e - s
        if k + 1 < len(exons):
            labels[e:exons[k + 1][0]] = INTRON


def _add_exon_lengths(lengths: dict, exons: list[tuple[int, int]]) -> None:
    sizes = [e - s for s, e in exons]
    if len(sizes) == 1:
        lengths["single_exon"].append(sizes[0])
        return
    lengths["initial_exon"].append(sizes[0])
    lengths["internal_exon"].extend(sizes[1:-1])
    lengths["terminal_exon"].append(sizes[-1])


def _count_strand(counts: TrainingCounts, view: np.ndarray, labels: np.ndarray, sites: dict, candidates: dict) -> None:
    words = ending_words(view, counts.order)
    for p in range(3):
        counts.coding[p] += count_words(words, labels == CODING + p, counts.order)
    counts.intron += count_words(words, labels == INTRON, counts.order)
    counts.intergenic += count_words(words, labels == INTERGENIC, counts.order)
    counts.background += count_words(ending_words(view, 1), labels == INTERGENIC, 1).reshape(4, 4)
    # (n + 1,) boundaries within DECOY_FLANK bases of a gene's base (or of another isoform's)
    genic = np.concatenate(([0], np.cumsum(labels != INTERGENIC)))
    bounds = np.arange(len(labels) + 1)
    near = genic[np.minimum(bounds + DECOY_FLANK, len(labels))] > genic[np.maximum(bounds - DECOY_FLANK, 0)]
    for kind, at in sites.items():
        offset, width = WINDOWS[kind]
        counts.signals[kind] += count_sites(view, at, offset, width)
        decoys = candidates[kind][near[candidates[kind]]]
        decoys = decoys[~np.isin(decoys, at)]
        counts.site_windows[kind].append(window_pairs(view, at, offset, width).astype(np.uint8))
        counts.fitted_site_windows[kind].append(window_pairs(view, at, *FITTED_WINDOWS[kind]).astype(np.uint8))
        counts.decoy_windows[kind].append(window_pairs(view, decoys, *FITTED_WINDOWS[kind]).astype(np.uint8))
        if kind == "start":
            rank = start_ranks(len(view), candidates["start"], candidates["stop"])  # (n,)
            counts.start_ranks["true"].append(rank[at].astype(np.uint8))
            counts.start_ranks["decoy"].append(rank[decoys].astype(np.uint8))


def check_training_genes(counts: TrainingCounts, annotation: pd.DataFrame, fasta, regions: list[Interval]) -> None:
    """Refuse training genes a gene model cannot be learned from, naming the annotation file and what to
    do; warn when they are few. ``counts`` as :func:`add_region` left them for ``regions`` of ``fasta``."""
    path = annotation.attrs.get("path", "the annotation")
    report = counts.report
    seen = sum(n for key, n in report.items() if key == "genes used" or key.startswith("skipped: "))
    if seen == 0:
        names = sorted({region.name for region in regions})
        with_cds = sorted(set(annotation.loc[annotation["type"].isin(_CDS_TYPES), "seqid"]))
        on_records = [name for name in names if name in with_cds]
        why = ("no coding gene lies wholly inside them" if on_records else
               f"it has no CDS rows on {', '.join(map(repr, names[:5]))} (its CDS rows are on: "
               f"{', '.join(with_cds[:5]) or 'no record'}{', ...' if len(with_cds) > 5 else ''})")
        raise AnnotationError(path, "nothing to learn a gene model from in the training regions "
                                    f"{_describe(regions)} of {fasta}: {why}; train on regions that hold "
                                    "annotated coding genes, with record names as the FASTA has them")
    misfits = {reason: report[f"skipped: {reason}"] for reason in _MISFITS if report[f"skipped: {reason}"]}
    if sum(misfits.values()) > MAX_MISFIT_SHARE * seen:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in misfits.items())
        raise AnnotationError(path, f"{sum(misfits.values())} of the {seen} coding genes in the training regions "
                                    f"do not fit the sequence of {fasta} ({reasons}): the CDS coordinates and phases "
                                    "contradict this FASTA; check that the annotation and the FASTA come from the "
                                    "same assembly, with the same record names and 1-based coordinates")
    used = report["genes used"]
    if used == 0:
        reasons = ", ".join(f"{key.removeprefix('skipped: ')}: {n}" for key, n in report.items() if n)
        raise AnnotationError(path, f"no usable coding gene in the training regions {_describe(regions)} of "
                                    f"{fasta} ({reasons}); train on regions that hold complete coding genes")
    introns = sum(counts.introns.values())
    canonical = sum(counts.introns[pair] for pair in CANONICAL_INTRONS)
    if introns and canonical < MIN_CANONICAL_SHARE * introns:
        common = ", ".join(f"{pair} {n}" for pair, n in counts.introns.most_common(3))
        raise AnnotationError(path, f"{introns - canonical} of the {introns} introns of the training genes are not "
                                    f"{', '.join(CANONICAL_INTRONS)} (most common: {common}): the gene model's splice "
                                    "signals are built for canonical introns; check that the exon coordinates fit "
                                    f"{fasta} (same assembly), or use a gene finder made for this species' splicing")
    if used < FEW_GENES:
        warnings.warn(f"{path}: the gene model learned from only {used} genes (fewer than {FEW_GENES}); its "
                      "statistics will be noisy: train on more of the genome if you can", stacklevel=3)


def _describe(regions: list[Interval], most: int = 3) -> str:
    """``NC_1:1-500, NC_1:900-1,200 and 4 more`` (1-based, inclusive)."""
    shown = ", ".join(f"{r.name}:{r.start + 1:,}-{r.end:,}" for r in regions[:most])
    return shown + (f" and {len(regions) - most} more" if len(regions) > most else "")
