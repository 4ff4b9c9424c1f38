"""genoformer: long-context genomic sequence modelling with a Reformer.

Data flows one way, and so do the imports::

    genome/ (FASTA, windows, annotations → labels) → tokenize/ → datasets/ → model/
    → tasks/ (Lightning) → predict.py → decode/ → export/, evaluate/ → cli.py, pipeline.py

Coordinates are 0-based half-open everywhere inside; files' 1-based coordinates are converted
where they are read or written.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Genome": "genoformer.genome",
    "GenomeWindows": "genoformer.genome",
    "Interval": "genoformer.genome",
    "read_annotation": "genoformer.genome",
    "label_track": "genoformer.genome",
    "LabelScheme": "genoformer.genome",
    "NucleotideTokenizer": "genoformer.tokenize",
    "KmerTokenizer": "genoformer.tokenize",
    "load_tokenizer": "genoformer.tokenize",
    "ReformerConfig": "genoformer.model",
    "Reformer": "genoformer.model",
}


def __getattr__(name: str):
    # Lazy: `import genoformer` stays fast; torch and Lightning load only when used.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genoformer' has no attribute {name!r}")


__all__ = sorted(_EXPORTS) + ["__version__"]
