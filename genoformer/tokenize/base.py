"""The logic every tokenizer shares: special tokens, input checks, batching, token geometry, JSON.

Id layout common to all tokenizers (subclasses append their own tokens after these)::

    0 [PAD]   1 [MASK]   2 [CLS]   3 [SEP]   4 [UNK]

A tokenizer turns a DNA sequence into tokens that each cover ``k`` consecutive bases, one token
every ``stride`` bases: token ``i`` covers bases ``[i*stride, i*stride + k)`` (0-based, half-open).
Only full tokens are made, so ``encode`` covers the first ``n_covered(n)`` bases and drops the
remaining ``(n - k) % stride`` tail bases; :meth:`Tokenizer.token_spans` and
:meth:`Tokenizer.base_coverage` give the exact token <-> base map used to move labels and
predictions between the two.

Input characters: A, C, G, T, N and the IUPAC ambiguity codes R Y S W K M B D H V, upper or lower
case (lower case gives the same tokens; the genome layer keeps the soft mask separately), plus the
other characters the genome layer's FASTA check accepts: U (RNA, read as T) and ``-`` (a gap, read
as N). Anything else (digits, ``*``, spaces, line breaks, non-ASCII) raises ``ValueError`` naming the
first bad position: files are validated by the genome layer, so such a character here is a caller bug.

Subclasses supply only their vocabulary: the byte -> code table, codes -> ids, ids -> bases and the
token-level complement.
"""
from __future__ import annotations

import functools
import json
import numbers
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np
import torch

from genoformer.errors import ConfigError
from genoformer.files import atomic_write

SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[CLS]", "[SEP]", "[UNK]")
PAD_ID, MASK_ID, CLS_ID, SEP_ID, UNK_ID = range(len(SPECIAL_TOKENS))
N_SPECIALS = len(SPECIAL_TOKENS)
ACGT = "ACGT"
IUPAC_AMBIGUOUS = "RYSWKMBDHV"
FORMAT_VERSION = 1
# Byte-table value for characters that are not DNA; real codes stay below it.
INVALID = 255
# Keys every tokenizer's JSON carries besides its constructor options.
_HEADER_KEYS = ("type", "format_version", "k", "stride", "vocab_size")


def byte_table(values: Mapping[str, int]) -> bytes:
    """256-entry translation table: each letter (and its lower case) -> its value, others INVALID.

    Used with ``bytes.translate``: CPython's table loop runs at a few GB/s, several times faster
    than numpy fancy indexing with a uint8 index array.
    """
    table = np.full(256, INVALID, dtype=np.uint8)
    for letter, value in values.items():
        table[ord(letter.upper())] = value
        table[ord(letter.lower())] = value
    return table.tobytes()


def _invalid_character(character: str, position: int) -> ValueError:
    return ValueError(
        f"invalid character {character!r} at position {position}: "
        "expected A, C, G, T, U, N, '-' or an IUPAC ambiguity code (R Y S W K M B D H V), any case"
    )


def _as_bytes(seq: str | bytes | bytearray | memoryview | np.ndarray) -> bytes | bytearray:
    """The sequence as ASCII bytes, copying only when the input is not already bytes-like."""
    if isinstance(seq, str):
        try:
            return seq.encode("ascii")
        except UnicodeEncodeError as error:
            raise _invalid_character(seq[error.start], error.start) from None
    if isinstance(seq, (bytes, bytearray)):
        return seq
    if isinstance(seq, memoryview):
        return seq.tobytes()
    if isinstance(seq, np.ndarray):
        if seq.dtype != np.uint8 or seq.ndim != 1:
            raise TypeError(f"a numpy sequence must be a 1-D uint8 array, got {seq.dtype} with shape {seq.shape}")
        return seq.tobytes()
    raise TypeError(f"cannot tokenize {type(seq).__name__}: give str, bytes, bytearray, memoryview or a uint8 array")


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or ConfigError naming the tokenizer option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"tokenizer {name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"tokenizer {name} must be between {low} and {high}, got {value}")
    return int(value)


class Tokenizer(ABC):
    """Base class: turns DNA into token ids covering ``k`` bases every ``stride`` bases."""

    type: ClassVar[str]
    # Constructor arguments, stored as attributes of the same name; they rebuild the tokenizer.
    option_keys: ClassVar[tuple[str, ...]]
    _registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    pad_id = PAD_ID
    mask_id = MASK_ID
    cls_id = CLS_ID
    sep_id = SEP_ID
    unk_id = UNK_ID
    special_ids = frozenset(range(N_SPECIALS))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            Tokenizer._registry[cls.type] = cls

    def __init__(self, k: int, stride: int, byte_values: Mapping[str, int]):
        self.k = k
        self.stride = stride
        # The genome layer accepts RNA and gapped FASTA: U is T, and a gap an unknown base (N), which
        # keeps every position of the file, so annotation coordinates still line up.
        self._byte_table = byte_table({"U": byte_values["T"], "-": byte_values["N"], **byte_values})

    # --- vocabulary, supplied by subclasses -------------------------------------------------------

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (specials included)."""

    @property
    @abstractmethod
    def n_id(self) -> int:
        """Id of the token for bases that are not A, C, G or T."""

    @abstractmethod
    def _ids_from_codes(self, codes: np.ndarray) -> np.ndarray:
        """Per-base byte-table values (uint8, checked) -> int64 token ids."""

    @abstractmethod
    def _bases_from_ids(self, ids: np.ndarray) -> bytes:
        """Token ids without PAD/MASK/CLS/SEP -> ASCII bases of the region they cover."""

    @abstractmethod
    def _complement(self, ids: np.ndarray) -> np.ndarray:
        """Each id -> the id of its reverse-complement token (specials and N map to themselves).

        Called once on the whole vocabulary to build the table ``reverse_complement`` looks up.
        """


    # --- encoding and decoding --------------------------------------------------------------------

    def encode(self, seq: str | bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """Token ids (int64, no specials added) of the first ``n_covered(len(seq))`` bases."""
        raw = _as_bytes(seq)
        codes = np.frombuffer(raw.translate(self._byte_table), dtype=np.uint8)
        if codes.size and codes.max() == INVALID:
            position = int(np.argmax(codes == INVALID))
            raise _invalid_character(chr(raw[position]), position)
        return self._ids_from_codes(codes)

    def decode(self, ids) -> str:
        """Bases covered by ``ids``; PAD/MASK/CLS/SEP are dropped, UNK reads as unknown bases ('N')."""
        ids = self._check_ids(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode takes a 1-D id array, got shape {ids.shape}")
        # min() is a fast reduction: filter (a copy) only when specials are present.
        if ids.size and ids.min() <= SEP_ID:
            ids = ids[ids > SEP_ID]
        return self._bases_from_ids(ids).decode("ascii")

    def batch_encode(self, seqs: Iterable, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode several sequences, padded with ``pad_id`` to ``length`` tokens (default: the longest).

        Returns ``(ids, attention_mask)``: LongTensor and BoolTensor of shape (batch, length), mask
        True on real tokens. A sequence with more than ``length`` tokens raises ValueError.
        """
        encoded = [self.encode(seq) for seq in seqs]
        longest = max((len(ids) for ids in encoded), default=0)
        if length is None:
            length = longest
        elif longest > length:
            index = next(i for i, ids in enumerate(encoded) if len(ids) > length)
            raise ValueError(f"sequence {index} has {len(encoded[index])} tokens, more than length={length}")
        batch = np.full((len(encoded), length), self.pad_id, dtype=np.int64)  # (batch, length)
        mask = np.zeros((len(encoded), length), dtype=bool)  # (batch, length)
        for row, ids in enumerate(encoded):
            batch[row, : len(ids)] = ids
            mask[row, : len(ids)] = True
        return torch.from_numpy(batch), torch.from_numpy(mask)

    def reverse_complement(self, ids) -> np.ndarray:
        """Token ids of the reverse-complement strand, along the last axis.

        The whole id array is reversed and each token complemented; specials map to themselves, so
        apply it before adding CLS/SEP or padding (a padded row would move its padding to the front).
        For k-mers it equals ``encode(reverse_complement(seq))`` when the tokens cover ``seq``
        exactly (``n_covered(len(seq)) == len(seq)``: always for stride 1).
        """
        ids = self._check_ids(ids)
        return self._complement_table[ids[..., ::-1]]

    @functools.cached_property
    def _complement_table(self) -> np.ndarray:
        # One int64 per id (32 KB for 6-mers, 134 MB for k = 12), built on first use: a lookup is
        # ~10x faster than complementing k-mer codes arithmetically per call.
        return self._complement(np.arange(self.vocab_size, dtype=np.int64))

    def _check_ids(self, ids) -> np.ndarray:
        array = np.asarray(ids)
        if array.size == 0:
            return array.astype(np.int64)
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
        if array.min() < 0 or array.max() >= self.vocab_size:
            flat = array.reshape(-1)
            position = int(np.argmax((flat < 0) | (flat >= self.vocab_size)))
            raise ValueError(
                f"token id {int(flat[position])} at position {position} is outside the vocabulary "
                f"(0..{self.vocab_size - 1})"
            )
        return array.astype(np.int64, copy=False)

    # --- token <-> base geometry ------------------------------------------------------------------

    def n_tokens(self, n_bases: int) -> int:
        """Tokens made from ``n_bases`` bases: 0 if shorter than k, else (n - k) // stride + 1."""
        if n_bases < 0:
            raise ValueError(f"n_bases must be >= 0, got {n_bases}")
        return 0 if n_bases < self.k else (n_bases - self.k) // self.stride + 1

    def n_covered(self, n_bases: int) -> int:
        """Bases covered by the tokens of ``n_bases`` bases (the prefix that ``decode`` returns)."""
        n = self.n_tokens(n_bases)
        return 0 if n == 0 else (n - 1) * self.stride + self.k

    def token_spans(self, n_tokens: int) -> np.ndarray:
        """(n_tokens, 2) int64: the [start, end) bases of each token, ``[i*stride, i*stride + k)``."""
        starts = np.arange(n_tokens, dtype=np.int64) * self.stride
        return np.stack([starts, starts + self.k], axis=1)

    def base_coverage(self, n_bases: int) -> np.ndarray:
        """(n_bases,) int64: how many tokens cover each base (0 for the dropped tail).

        Per-token predictions summed onto bases and divided by this give each base the mean of
        the tokens that cover it.
        """
        spans = self.token_spans(self.n_tokens(n_bases))
        steps = np.bincount(spans[:, 0], minlength=n_bases + 1) - np.bincount(spans[:, 1], minlength=n_bases + 1)
        return np.cumsum(steps)[:n_bases]

    # --- JSON ---------------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.option_keys}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``Tokenizer.from_dict`` rebuilds an equal tokenizer."""
        header = {
            "type": self.type,
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "stride": self.stride,
            "vocab_size": self.vocab_size,
        }
        return {**header, **self._options()}

    @staticmethod
    def from_dict(config: Mapping[str, Any]) -> Tokenizer:
        """Build the tokenizer a ``to_dict`` result describes, dispatching on its "type"."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"a tokenizer description must be a JSON object, got {type(config).__name__}")
        kind = config.get("type")
        if kind not in Tokenizer._registry:
            raise ConfigError(f"unknown tokenizer type {kind!r}; known: {sorted(Tokenizer._registry)}")
        version = config.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(f"tokenizer format_version {version!r} is not supported (this genoformer reads {FORMAT_VERSION})")
        cls = Tokenizer._registry[kind]
        option_keys = cls.option_keys
        unknown = sorted(set(config) - set(_HEADER_KEYS) - set(option_keys))
        if unknown:
            raise ConfigError(f"unknown {kind} tokenizer keys {unknown}; allowed: {sorted({*_HEADER_KEYS, *option_keys})}")
        tokenizer = cls(**{key: config[key] for key in option_keys if key in config})
        # The header must describe the tokenizer it builds (e.g. the vocab_size a model was trained with).
        built = tokenizer.to_dict()
        for key in _HEADER_KEYS[2:]:
            if key in config and config[key] != built[key]:
                raise ConfigError(f"{kind} tokenizer {key}={config[key]!r} does not match the options (expected {built[key]!r})")
        return tokenizer

    def save(self, path: str | os.PathLike) -> None:
        """Write ``to_dict()`` as JSON, atomically."""
        with atomic_write(path) as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self._options().items())
        return f"{type(self).__name__}({options})"


def load_tokenizer(source: str | os.PathLike | Mapping[str, Any]) -> Tokenizer:
    """A tokenizer from a JSON file written by ``Tokenizer.save`` or from a ``to_dict`` result."""
    if isinstance(source, Mapping):
        return Tokenizer.from_dict(source)
    try:
        with open(source, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{os.fspath(source)}: cannot read tokenizer JSON: {error}") from None
    try:
        return Tokenizer.from_dict(config)
    except ConfigError as error:
        raise ConfigError(f"{os.fspath(source)}: {error}") from None
