"""One token per base.

Ids::

    0 [PAD]  1 [MASK]  2 [CLS]  3 [SEP]  4 [UNK]  5 A  6 C  7 G  8 T  9 N

IUPAC ambiguity codes (R Y S W K M B D H V) become N, or UNK with ``ambiguous="UNK"``; lower case
gives the same ids as upper case. ``decode`` writes N for both N and UNK, so it is the exact inverse
of ``encode`` on upper-case ACGTN input. ``KmerTokenizer(1)`` uses the same ids.
"""
from __future__ import annotations

import numpy as np

from genoformer.errors import ConfigError
from genoformer.tokenize.base import ACGT, IUPAC_AMBIGUOUS, N_SPECIALS, UNK_ID, Tokenizer

A_ID, C_ID, G_ID, T_ID, N_ID = range(N_SPECIALS, N_SPECIALS + 5)


class NucleotideTokenizer(Tokenizer):
    """Single-base tokens: k = 1, stride = 1."""

    type = "nucleotide"
    option_keys = ("ambiguous",)

    def __init__(self, ambiguous: str = "N"):
        if ambiguous not in ("N", "UNK"):
            raise ConfigError(f'nucleotide tokenizer ambiguous must be "N" or "UNK", got {ambiguous!r}')
        self.ambiguous = ambiguous
        values = {base: A_ID + i for i, base in enumerate(ACGT + "N")}
        values |= dict.fromkeys(IUPAC_AMBIGUOUS, N_ID if ambiguous == "N" else UNK_ID)
        super().__init__(k=1, stride=1, byte_values=values)
        # Byte values are the ids themselves, so decoding is one bytes.translate of the uint8 ids.
        decode_table = bytearray(range(256))
        decode_table[A_ID : N_ID + 1] = b"ACGTN"
        decode_table[UNK_ID] = ord("N")
        self._decode_table = bytes(decode_table)

    @property
    def vocab_size(self) -> int:
        return N_ID + 1

    @property
    def n_id(self) -> int:
        return N_ID

    def _ids_from_codes(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.int64)

    def _bases_from_ids(self, ids: np.ndarray) -> bytes:
        return ids.astype(np.uint8).tobytes().translate(self._decode_table)

    def _complement(self, ids: np.ndarray) -> np.ndarray:
        complement = np.arange(self.vocab_size, dtype=np.int64)
        complement[[A_ID, C_ID, G_ID, T_ID]] = [T_ID, G_ID, C_ID, A_ID]
        return complement[ids]
