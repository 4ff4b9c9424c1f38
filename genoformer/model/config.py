"""`ReformerConfig`: every hyper-parameter of the Reformer encoder, validated, JSON round-trippable.

The memory knobs (`head_group_size`, `attention_chunk_tokens`, `ff_chunk_size`) change how much is held
at once, never the result: the same weights and seed give the same outputs whatever their values.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genoformer.errors import ConfigError

if TYPE_CHECKING:
    from genoformer.tokenize import Tokenizer

ATTENTION_KINDS = ("lsh", "local", "full")

# Largest bucket count one random rotation hashes into (64 projections, argmax over [xR; -xR]).
# Larger counts (multi-megabase windows want ~2L/chunk buckets) are products of such factors.
MAX_BUCKET_FACTOR = 128
# Automatic memory knobs per device type: (attention rows per kernel step, heads x positions per
# head group). On a CPU they keep the working set small (memory is what limits long windows there):
# 8,192 rows are ~32 MiB of kernel temporaries (2,048 made training steps 25-28% slower, at 8 x 2,046
# and at 65,536 tokens), and a (heads, L, 64) float32 group tensor is at most 32 MiB (a training batch
# of 8 x 2048 keeps all 4 heads in one group). A GPU launches kernels per step and has memory to
# spare, so it takes few, large steps: with 2,048 rows and 131,072-token groups a training step of
# 32 x 8,190 tokens (d_model 256, 8 heads, depth 6) took ~45 s on an H200 (4,096 kernel steps per
# LSH layer and pass); with 4M-token groups, 1.09 / 0.96 / 0.95 s at 131,072 / 1M / 2M rows (peak
# 3.9 / 7.5 / 11.8 GiB). 2M rows made a 1 Mb single-window step no faster (3.83 s against 3.72 s at
# 131,072) at twice the memory (19.1 GiB against 9.5), so 1M. The third knob, positions per
# feed-forward (and normalise-and-project) step, is the CPU's 8,192 (a (batch, 8192, d_ff) float32
# chunk); on a GPU 1M positions, so a 1 Mb window's position-wise work is a few launches per layer
# instead of hundreds (the same bound sets how many positions LSH hashes at a time).
AUTO_MEMORY_KNOBS = {"cpu": (1 << 13, 1 << 17, 1 << 13), "cuda": (1 << 20, 1 << 22, 1 << 20)}
# The attention kernel "auto" picks per device type (see ReformerConfig.attention_kernel). On an H200
# (torch 2.11, bf16, d_model 256, depth 6, all blocks reversible, `python bench/gpu.py`) FlexAttention's
# fused kernel made training steps 1.6x faster at 1 Mb and 4 Mb (1.87 -> 1.16 s, 8.87 -> 5.69 s) and
# fwd+bwd 1.8-2.1x at 4-64 kb, with the same gradients (float32 within 2.7e-7 of CPU float64, as the
# chunked kernel).
AUTO_ATTENTION_KERNEL = {"cpu": "chunked", "cuda": "flex"}
ATTENTION_KERNELS = ("auto", "chunked", "flex")
# Fields that change how the encoder computes (memory held at once, which kernel), not what: a stage
# rerun under a change of these alone is up to date (see settings_as_digested).
HOW_NOT_WHAT_FIELDS = ("head_group_size", "attention_chunk_tokens", "ff_chunk_size", "attention_kernel")
# ...and the values pipeline digests see them at, whatever they are set to: the memory knobs' defaults
# before attention_kernel existed (an upgrade leaves earlier runs' stages up to date); it is left out.
_DIGESTED_KNOBS = {"head_group_size": None, "attention_chunk_tokens": None, "ff_chunk_size": 8192}
# The tokenizer of a model trained without one named (tasks, pipeline, `genoformer plan`).
DEFAULT_TOKENIZER = "nucleotide"
# Fields a training task sets itself (from its tokenizer, objective and seed); every other field is
# an encoder setting the user chooses (a task's ``encoder``, a pipeline's ``model`` section).
TASK_SET_FIELDS = ("vocab_size", "pad_token_id", "causal", "seed")


@dataclass
class ReformerConfig:
    """Hyper-parameters of :class:`genoformer.model.Reformer`.

    Architecture
        vocab_size: number of token ids (the tokenizer's ``vocab_size``).
        d_model: width of the residual streams.
        n_heads: attention heads; ``d_model / n_heads`` is the head width and must be even (rotary).
        depth: number of reversible blocks (one attention + one feed-forward each).
        d_ff: hidden width of the feed-forward.
        attention: ``"lsh"``, ``"local"`` or ``"full"`` for every layer, or a list of those: one per
            layer, or a shorter pattern repeated to ``depth`` (``["local", "lsh"]`` alternates).
        causal: decoder mode (a token sees only earlier positions) instead of a bidirectional encoder.
        reversible: ``True`` runs the RevNet stack that stores only its output and recomputes each block's
            activations in backward; ``False`` runs the same coupling (Y1 = X1 + F(X2), Y2 = X2 + G(Y1))
            as an ordinary residual stack whose activations autograd keeps: the same result, no
            recompute, more memory (with the kept attention-dropout draws and the integer dropout
            masks, 2.0-2.2x the training tokens per CPU second of the recipes' models at 8c36586:
            docs/training.md).
            An integer k runs the first k blocks reversibly and keeps the other blocks' activations: memory
            and time in between, so a step too long to keep every block's activations need not
            recompute them all.
            ``"auto"`` (the default; ``None`` means the same) decides per training call: as many blocks keep
            their activations as the memory planner's estimate lets fit
            (``genoformer.model.activations.kept_blocks``), the rest run reversibly (all of them for
            long windows). Calls without gradients run the lean in-place stack (``False``: the ordinary one).
        pad_token_id: id used to pad inputs to a chunk multiple inside the model.
        rotary_base: base of the rotary position frequencies (positions are computed on the fly, so
            any length works).
        layer_norm_eps: epsilon of every LayerNorm.
        tie_word_embeddings: the masked-LM decoder reuses the token embedding matrix.
        init_std: standard deviation of the normal initialisation of weight matrices.

    Attention
        chunk_size: tokens per chunk for LSH and local attention; each chunk attends to itself and the
            previous chunk (and the next one when not causal).
        n_hashes: hash rounds of LSH attention in training (and in evaluation unless ``eval_n_hashes``).
        eval_n_hashes: hash rounds in ``eval()`` mode (more rounds evaluate better); ``None`` = n_hashes.
        n_buckets: ``None`` follows each sequence's real length on every call (the next power of two
            >= 2 * length / chunk_size, so a mean bucket fits a chunk); or a fixed count: 1, an even
            number <= 128, or a power of two.
        dropout: dropout on both branch outputs (attention and feed-forward). Both dropout rates are
            realised rounded to a multiple of 2^-16 (``runtime.drop_rate``; 0.05 -> 0.0500031).
        attention_dropout: dropout on attention probabilities (its masks are drawn per kernel step
            and head group, so unlike every other result they change with the memory knobs).
        seed: seeds the LSH random rotations and dropout masks. No layer ever touches the global
            torch RNG; training calls draw fresh rotations/masks from (seed, call counter).

    Memory (results do not depend on these, except attention-dropout masks)
        head_group_size: heads projected and attended together; ``None`` = chosen per call, as many
            as keep heads x batch x length within the device's budget (``AUTO_MEMORY_KNOBS``: all
            heads for training-size batches, one head at a time for long windows on a CPU, where each
            head's full-length projections, output and gradients are the largest temporaries).
        attention_chunk_tokens: query rows (batch x heads x positions) scored per step of the chunked
            attention kernel; bounds its working memory (about 4 KiB per row in float32). ``None`` =
            the device's default (``AUTO_MEMORY_KNOBS``: 8,192 on a CPU, 1,048,576 on a GPU).
        ff_chunk_size: positions per feed-forward step (its d_ff activations exist one chunk at a time)
            and per normalise-and-project step of the reversible stack; ``None`` = the device's default
            (``AUTO_MEMORY_KNOBS``: 8,192 on a CPU, 1,048,576 on a GPU).

    Speed (the kernels agree to float rounding; tests/test_flex.py)
        attention_kernel: how local and LSH attention are computed. "chunked" (`chunked.py`): chunk
            steps of batched matrix products, any device, attention dropout. "flex" (`flex.py`): one fused
            FlexAttention kernel per head group (compiled by torch.compile), CUDA only, no attention
            dropout; on another device, the chunked kernel with a warning. "auto": ``AUTO_ATTENTION_KERNEL``
            of the device (flex on a GPU), and "chunked" whenever training uses attention dropout or
            Triton is missing. Outputs at padding positions (attention_mask 0) differ between the kernels
            (no real token sees them); every real position agrees.

    Precision
        low_precision_streams: under autocast (``bf16-mixed``), the reversible stack holds its two
            residual streams and their gradients in the autocast dtype, halving the memory that grows
            with length; each branch output is then added in that precision (the sums round to bf16
            after every branch). ``False`` keeps them in the parameters' dtype (float32), as an
            ordinary residual stack under autocast does. No effect without autocast.
    """

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    depth: int = 6
    d_ff: int = 1024
    attention: str | list[str] = "lsh"
    chunk_size: int = 64
    n_hashes: int = 4
    eval_n_hashes: int | None = None
    n_buckets: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    causal: bool = False
    # None stands for "auto" (and becomes it): a default of no fixed type lets the pipeline's config check,
    # which holds values to their default's type, accept true, false and "auto" alike.
    reversible: bool | int | str | None = None
    pad_token_id: int = 0
    rotary_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    init_std: float = 0.02
    seed: int = 0
    head_group_size: int | None = None
    attention_chunk_tokens: int | None = None
    ff_chunk_size: int | None = None
    attention_kernel: str = "auto"
    low_precision_streams: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def layer_types(self) -> tuple[str, ...]:
        """Attention kind of each of the ``depth`` layers."""
        pattern = [self.attention] if isinstance(self.attention, str) else self.attention
        return tuple(pattern[i % len(pattern)] for i in range(self.depth))

    def head_groups(self, tokens: int, device_type: str = "cpu") -> list[slice]:
        """The head groups of a call over ``tokens`` (batch x padded length) positions, as head slices."""
        size = self.head_group_size
        if size is None:
            budget = _auto_knobs(device_type)[1]
            size = max([g for g in range(1, self.n_heads + 1)
                        if self.n_heads % g == 0 and g * tokens <= budget], default=1)
        return [slice(h, h + size) for h in range(0, self.n_heads, size)]

    def attention_rows(self, device_type: str = "cpu") -> int:
        """Query rows per step of the chunked attention kernel on this device type."""
        return self.attention_chunk_tokens or _auto_knobs(device_type)[0]

    def uses_flex_attention(self, device_type: str, training: bool) -> bool:
        """Whether local and LSH attention run as FlexAttention (`flex.py`) in a call on this device."""
        kernel = self.attention_kernel
        if kernel == "auto":
            uses_dropout = training and self.attention_dropout > 0
            return not uses_dropout and AUTO_ATTENTION_KERNEL.get(device_type) == "flex" and _triton_installed()
        if kernel == "flex" and device_type != "cuda":  # e.g. a model trained so on a GPU, annotating on a CPU
            warnings.warn(f"attention_kernel 'flex' runs on CUDA devices only: the chunked kernel computes the "
                          f"same on {device_type!r}", stacklevel=2)
            return False
        return kernel == "flex"

    def ff_positions(self, device_type: str = "cpu") -> int:
        """Positions per feed-forward (and normalise-and-project) step on this device type."""
        return self.ff_chunk_size or _auto_knobs(device_type)[2]

    # ------------------------------------------------------------------ encoder settings
    @classmethod
    def setting_defaults(cls) -> dict[str, Any]:
        """The user-chosen fields (all but ``TASK_SET_FIELDS``) with their defaults: the one place
        training tasks, the pipeline and ``genoformer plan`` take their defaults from."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in TASK_SET_FIELDS}

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None, tokenizer: Tokenizer, *, causal: bool = False,
                      seed: int = 0, where: str = "encoder") -> "ReformerConfig":
        """The config of user ``settings`` (a mapping of ``setting_defaults`` keys; the rest default)
        completed with what the task sets (vocabulary and padding from ``tokenizer``); ``where`` names
        the settings in errors (e.g. ``model.init_args.encoder``)."""
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{where} must be a mapping of encoder settings, got {settings!r}")
        by_task = sorted(set(settings) & set(TASK_SET_FIELDS))
        if by_task:
            raise ConfigError(f"{where}: {by_task} are set by the training task (from its tokenizer, objective "
                              "and seed), not among the encoder settings: remove them")
        unknown = sorted(set(settings) - set(cls.setting_defaults()))
        if unknown:
            raise ConfigError(f"{where}: unknown encoder setting(s) {unknown}; known: {sorted(cls.setting_defaults())}")
        return cls(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, causal=causal, seed=seed, **settings)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the init fields (lists copied)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, list) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReformerConfig":
        """Build from :meth:`to_dict` output; unknown or missing keys raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        if "vocab_size" not in data:
            raise ConfigError("model config is missing 'vocab_size'")
        return cls(**data)

    # ------------------------------------------------------------------ validation
    _INT_FIELDS = ("vocab_size", "d_model", "n_heads", "depth", "d_ff", "chunk_size", "n_hashes",
                   "pad_token_id", "seed")
    _OPTIONAL_INT_FIELDS = ("eval_n_hashes", "n_buckets", "head_group_size", "attention_chunk_tokens", "ff_chunk_size")
    _FLOAT_FIELDS = ("dropout", "attention_dropout", "rotary_base", "layer_norm_eps", "init_std")
    _BOOL_FIELDS = ("causal", "tie_word_embeddings", "low_precision_streams")

    def _check_types(self) -> None:
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for name in self._INT_FIELDS:
            if not is_int(getattr(self, name)):
                raise ConfigError(f"model config {name!r} must be an integer, got {getattr(self, name)!r}")
        for name in self._OPTIONAL_INT_FIELDS:
            v = getattr(self, name)
            if v is not None and not is_int(v):
                raise ConfigError(f"model config {name!r} must be an integer or null, got {v!r}")
        for name in self._FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"model config {name!r} must be a number, got {v!r}")
            setattr(self, name, float(v))
        for name in self._BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model config {name!r} must be true or false, got {getattr(self, name)!r}")
        if self.reversible is None:
            self.reversible = "auto"
        if isinstance(self.reversible, bool) or self.reversible == "auto":
            pass
        elif not isinstance(self.reversible, int) or not 0 <= self.reversible <= self.depth:
            raise ConfigError(f"model config 'reversible' must be true, false, \"auto\" or a number of blocks "
                              f"from 0 to depth ({self.depth}), got {self.reversible!r}")
        if isinstance(self.attention, tuple):
            self.attention = list(self.attention)
        if not isinstance(self.attention, (str, list)):
            raise ConfigError(f"model config 'attention' must be a string or a list, got {self.attention!r}")

    def _check_values(self) -> None:
        def positive(name):
            if getattr(self, name) < 1:
                raise ConfigError(f"model config {name!r} must be >= 1, got {getattr(self, name)}")

        for name in ("vocab_size", "d_model", "n_heads", "depth", "d_ff", "chunk_size", "n_hashes"):
            positive(name)
        for name in ("eval_n_hashes", "head_group_size", "attention_chunk_tokens", "ff_chunk_size"):
            if getattr(self, name) is not None:
                positive(name)
        if self.d_model % self.n_heads:
            raise ConfigError(f"model config d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"model config head width d_model/n_heads={self.head_dim} must be even "
                              "(rotary positions)")
        if self.head_group_size is not None and self.n_heads % self.head_group_size:
            raise ConfigError(f"model config n_heads={self.n_heads} is not divisible by "
                              f"head_group_size={self.head_group_size}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"model config pad_token_id={self.pad_token_id} is outside the vocabulary "
                              f"[0, {self.vocab_size})")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model config {name!r} must be in [0, 1), got {getattr(self, name)}")
        if self.rotary_base <= 1.0:
            raise ConfigError(f"model config 'rotary_base' must be > 1, got {self.rotary_base}")
        if self.layer_norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError("model config 'layer_norm_eps' and 'init_std' must be > 0")
        if self.seed < 0:
            raise ConfigError(f"model config 'seed' must be >= 0, got {self.seed}")
        nb = self.n_buckets
        if nb is not None and not (nb == 1 or (nb % 2 == 0 and 2 <= nb <= MAX_BUCKET_FACTOR)
                                   or (nb > MAX_BUCKET_FACTOR and nb & (nb - 1) == 0)):
            raise ConfigError(f"model config n_buckets={nb} must be null, 1, an even number <= "
                              f"{MAX_BUCKET_FACTOR}, or a power of two")
        if self.attention_kernel not in ATTENTION_KERNELS:
            raise ConfigError(f"model config attention_kernel={self.attention_kernel!r}; choose from "
                              f"{list(ATTENTION_KERNELS)}")
        if self.attention_kernel == "flex" and self.attention_dropout > 0:
            raise ConfigError("model config attention_kernel 'flex' has no attention dropout: set "
                              "attention_dropout to 0, or use 'chunked' or 'auto'")
        pattern = [self.attention] if isinstance(self.attention, str) else self.attention
        if not pattern:
            raise ConfigError("model config 'attention' list is empty")
        bad = [a for a in pattern if a not in ATTENTION_KINDS]
        if bad:
            raise ConfigError(f"model config 'attention' has unknown kind(s) {bad}; "
                              f"choose from {list(ATTENTION_KINDS)}")
        if self.depth % len(pattern):
            raise ConfigError(f"model config 'attention' has {len(pattern)} entries, which does not divide "
                              f"depth={self.depth} (give one per layer or a repeating pattern)")


def settings_as_digested(settings: dict) -> dict:
    """Encoder settings as a stage digest sees them: ``HOW_NOT_WHAT_FIELDS`` at fixed values."""
    return {**{k: v for k, v in settings.items() if k not in HOW_NOT_WHAT_FIELDS}, **_DIGESTED_KNOBS}


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None  # FlexAttention's fused kernel is Triton


def _auto_knobs(device_type: str) -> tuple[int, int, int]:
    return AUTO_MEMORY_KNOBS.get(device_type, AUTO_MEMORY_KNOBS["cpu"])
