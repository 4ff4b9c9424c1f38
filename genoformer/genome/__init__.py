"""Genome access: FASTA records, intervals, windows, annotations and per-base labels.

All coordinates are 0-based half-open (see :mod:`genoformer.genome.fasta`).
"""
from .annotation import read_annotation
from .fasta import Genome
from .intervals import Interval, read_bed_regions
from .labels import LabelScheme, label_track
from .windows import GenomeWindows

__all__ = [
    "Genome",
    "GenomeWindows",
    "Interval",
    "LabelScheme",
    "label_track",
    "read_annotation",
    "read_bed_regions",
]
