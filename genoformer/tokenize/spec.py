"""Tokenizers named by short strings, as configs and the command line give them.

``"nucleotide"`` is one token per base; ``"kmer6"`` overlapping 6-mers (stride 1);
``"kmer6/6"`` non-overlapping 6-mers; ``"kmerK/S"`` k-mers of length K every S bases.
"""
from __future__ import annotations

import re

from ..errors import ConfigError
from .base import Tokenizer
from .kmer import KmerTokenizer
from .nucleotide import NucleotideTokenizer

_KMER = re.compile(r"kmer(\d+)(?:/(\d+))?")


def make_tokenizer(spec: str) -> Tokenizer:
    """Build a tokenizer from its short name (see the module docstring)."""
    text = str(spec).strip().lower()
    if text in ("nucleotide", "nt", "base"):
        return NucleotideTokenizer()
    match = _KMER.fullmatch(text)
    if match:
        k = int(match.group(1))
        return KmerTokenizer(k, int(match.group(2) or 1))
    raise ConfigError(f"unknown tokenizer {spec!r}: use 'nucleotide', 'kmerK' (overlapping) or 'kmerK/S' (stride S)")
