"""Genome access: FASTA records, intervals, windows, annotations and per-base labels.

All coordinates are 0-based half-open (see :mod:`genoformer.genome.fasta`).
"""
from .annotation import genbank_to_fasta, read_annotation
from .annotation_table import check_against_genome, make_annotation
from .fasta import Genome
from .intervals import Interval, read_bed_files, read_bed_regions, subtract_intervals
from .labels import LabelIndex, LabelScheme, label_track
from .windows import GenomeWindows

__all__ = [
    "Genome",
    "GenomeWindows",
    "Interval",
    "LabelIndex",
    "LabelScheme",
    "check_against_genome",
    "genbank_to_fasta",
    "label_track",
    "make_annotation",
    "read_annotation",
    "read_bed_files",
    "read_bed_regions",
    "subtract_intervals",
]
