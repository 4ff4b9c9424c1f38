"""k-mer tokens: one token per k bases every ``stride`` bases (1 <= stride <= k, 1 <= k <= 12).

Ids::

    0 [PAD]  1 [MASK]  2 [CLS]  3 [SEP]  4 [UNK]
    5 + code    for each k-mer, code = its base-4 number with A=0 C=1 G=2 T=3, first base most
                significant (k=3: AAA=5, AAC=6, ..., TTT=5+63)
    5 + 4**k    [N]: any k-mer containing N or an IUPAC ambiguity code

``KmerTokenizer(1)`` therefore has the nucleotide tokenizer's ids (A=5 C=6 G=7 T=8 N=9).

Token ``i`` covers bases ``[i*stride, i*stride + k)``; ``encode`` drops the ``(n - k) % stride``
tail bases no full k-mer reaches. ``decode`` returns the covered bases: exact for N-free input;
a base reads N only when every token covering it is [N] (or UNK).

Reverse complement at token level reverses the token order and maps each k-mer to its reverse
complement ([N] and specials to themselves). It equals ``encode`` of the reverse-complement
sequence whenever the tokens cover the sequence exactly ((n - k) % stride == 0; always for
stride 1); otherwise the dropped tail makes the two strands' tokens start at different offsets.
"""
from __future__ import annotations

import numpy as np

from genoformer.tokenize.base import ACGT, IUPAC_AMBIGUOUS, N_SPECIALS, Tokenizer, check_int

MAX_K = 12
# Per-base codes from the byte table: 0..3 for A C G T, AMBIGUOUS for N and IUPAC codes.
AMBIGUOUS = 4
_LETTERS = bytes(bytearray(b"ACGTN") + bytearray(251))


class KmerTokenizer(Tokenizer):
    """Overlapping (stride < k) or non-overlapping (stride = k) k-mers."""

    type = "kmer"
    option_keys = ("k", "stride")

    def __init__(self, k: int, stride: int = 1):
        k = check_int("k", k, 1, MAX_K)
        stride = check_int("stride", stride, 1, k)
        values = {base: code for code, base in enumerate(ACGT)} | dict.fromkeys("N" + IUPAC_AMBIGUOUS, AMBIGUOUS)
        super().__init__(k=k, stride=stride, byte_values=values)
        # Smallest accumulator that holds a k-mer code (4**8 - 1 = 65535): fewer bytes per pass.
        self._code_dtype = np.uint16 if k <= 8 else np.uint32

    @property
    def vocab_size(self) -> int:
        return N_SPECIALS + 4**self.k + 1

    @property
    def n_id(self) -> int:
        return N_SPECIALS + 4**self.k

    def _column(self, per_base: np.ndarray, offset: int, n_tokens: int) -> np.ndarray:
        """View of ``per_base`` at base ``offset`` of every token: element i is base i*stride + offset."""
        return per_base[offset : offset + (n_tokens - 1) * self.stride + 1 : self.stride]

    def _ids_from_codes(self, codes: np.ndarray) -> np.ndarray:
        n_tokens = self.n_tokens(codes.size)
        ids = np.empty(n_tokens, dtype=np.int64)
        if n_tokens == 0:
            return ids
        ambiguous = codes.max() == AMBIGUOUS
        bases = codes & 3 if ambiguous else codes
        # k whole-array steps instead of a loop over positions: code = code * 4 + next base.
        kmer = self._column(bases, 0, n_tokens).astype(self._code_dtype)
        for offset in range(1, self.k):
            kmer <<= 2
            kmer |= self._column(bases, offset, n_tokens)
        np.add(kmer, N_SPECIALS, out=ids, dtype=np.int64)
        if ambiguous:
            flags = codes == AMBIGUOUS
            has_n = self._column(flags, 0, n_tokens).copy()
            for offset in range(1, self.k):
                has_n |= self._column(flags, offset, n_tokens)
            ids[has_n] = self.n_id
        return ids

    def _digits(self, codes: np.ndarray, offset: int) -> np.ndarray:
        """Base code (0..3) at ``offset`` within each k-mer code."""
        return (codes >> (2 * (self.k - 1 - offset))) & 3

    def _bases_from_ids(self, ids: np.ndarray) -> bytes:
        n_tokens = len(ids)
        if n_tokens == 0:
            return b""
        known = (ids >= N_SPECIALS) & (ids != self.n_id)
        codes = (ids - N_SPECIALS).astype(np.uint32)  # unknown ids wrap around; they are never written
        bases = np.full((n_tokens - 1) * self.stride + self.k, AMBIGUOUS, dtype=np.uint8)
        if known.all():
            # Each base from the token starting at or just before it; the last token adds its tail.
            for offset in range(self.stride):
                np.copyto(self._column(bases, offset, n_tokens), self._digits(codes, offset), casting="unsafe")
            bases[n_tokens * self.stride :] = self._digits(codes[-1], np.arange(self.stride, self.k))
        else:
            # Every known token writes all the bases it covers, unknown tokens nothing: a base is N
            # only when no covering token knows it. Overlapping k-mers of one sequence agree.
            for offset in range(self.k):
                np.copyto(self._column(bases, offset, n_tokens), self._digits(codes, offset), where=known, casting="unsafe")
        return bases.tobytes().translate(_LETTERS)

    def _complement(self, ids: np.ndarray) -> np.ndarray:
        is_kmer = (ids >= N_SPECIALS) & (ids < self.n_id)
        # Complementing every base (A<->T, C<->G: digit -> 3 - digit) flips all 2k code bits.
        codes = (ids - N_SPECIALS).astype(np.uint32) ^ np.uint32(4**self.k - 1)
        # Reverse the 16 two-bit digits of the 32-bit word (swap digit pairs, then nibbles, then
        # bytes), which leaves the k digits in the top 2k bits.
        codes = ((codes >> 2) & 0x33333333) | ((codes & 0x33333333) << 2)
        codes = ((codes >> 4) & 0x0F0F0F0F) | ((codes & 0x0F0F0F0F) << 4)
        codes = codes.byteswap() >> (32 - 2 * self.k)
        return np.where(is_kmer, codes.astype(np.int64) + N_SPECIALS, ids)
