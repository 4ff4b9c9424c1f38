"""genoformer: long-context genomic sequence modelling with a Reformer.

Data flows one way, and so do the imports, each layer using only those before it::

    errors.py, files.py → genome/ (FASTA, windows, annotations → labels) → tokenize/
    → datasets/ (windows → token ids and labels; stitching windows' probabilities back)
    → model/ (torch, no Lightning: config, rotary, attention, chunked, reversible, reformer, heads,
      networks, memory, runtime, io) → tasks/ (Lightning) → predict.py → export/
    → annotate.py → report.py → pipeline.py → commands.py → cli.py

Beside that line stand three gene-structure libraries that use only genome/ (and each other):
decode/ (per-base probabilities → gene models), genemodel/ (a gene model learned from an
annotation, decoded by decode/) and evaluate/ (scores against a reference). tasks/ uses decode/
and evaluate/ for its gene-level validation scores, annotate.py for its calls, with the same code.

In Python, annotate a genome with a trained model::

    model = genoformer.load_model("runs/ecoli/finetune/model")
    result = genoformer.annotate_genome(model, "genome.fa", "out/genome")
    result.features  # the called genes (pandas); result.paths: GFF3, BED and tracks written

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
    "load_model": "genoformer.annotate",
    "annotate_genome": "genoformer.annotate",
}


def __getattr__(name: str):
    # Lazy: `import genoformer` stays fast; torch and Lightning load only when used.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genoformer' has no attribute {name!r}")


__all__ = sorted(_EXPORTS) + ["__version__"]
