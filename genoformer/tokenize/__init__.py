"""DNA tokenizers: single-base and k-mer, with an exact token <-> base map and token-level reverse complement.

See :mod:`genoformer.tokenize.base` for the shared interface and id layout.
"""
from genoformer.tokenize.base import SPECIAL_TOKENS, Tokenizer, load_tokenizer
from genoformer.tokenize.kmer import KmerTokenizer
from genoformer.tokenize.nucleotide import NucleotideTokenizer
from genoformer.tokenize.spec import make_tokenizer

__all__ = ["SPECIAL_TOKENS", "KmerTokenizer", "NucleotideTokenizer", "Tokenizer", "load_tokenizer", "make_tokenizer"]
