"""Nucleotide, exon and gene level evaluation of predicted gene structures against a reference."""
from genoformer.evaluate.metrics import evaluate, format_table, write_json

__all__ = ["evaluate", "format_table", "write_json"]
