"""A trained site network (:class:`~genoformer.model.sites.SiteNetwork`) with what it scores: its training
loop on labelled strands, prediction over whole strands, and its two files.

The decoders own what a site is: :mod:`genoformer.genemodel.site_network` labels splice donors and
acceptors, :mod:`genoformer.decode.start_network` translation starts. Each hands this module strands
(base codes read 5' -> 3') with a label row per kind: 1 at a real site, 0 at a candidate that is not one
(a position whose word could begin a site of that kind), :data:`UNLABELLED` elsewhere.

Training draws random crops of the strands (in proportion to their length) and fits the network by
binary cross-entropy at the labelled positions of each crop's interior (a network's reach from either
crop edge, where its padding would stand in for sequence, is left out); AdamW with warm-up and a cosine
schedule, seeded, without resetting the caller's random state. Its output is the log-odds that a
candidate is a real site, at the training set's share of real sites among candidates.

Files (never pickle): ``STEM.json`` (format, configuration, kinds, each kind's candidate words, the
weights' digest, the owner's settings and a training summary) and ``STEM.safetensors`` (the weights).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load, save

from genoformer.errors import ConfigError, ModelFileError
from genoformer.files import atomic_write
from genoformer.model.sites import SiteNetwork, SiteNetworkConfig, one_hot_bases

FILE_FORMAT = "genoformer site network"
FILE_VERSION = 1
UNLABELLED = -1
PREDICT_CHUNK = 200_000  # bases per forward pass at prediction (plus the reach either side)


@dataclass(frozen=True)
class SiteTraining:
    """How the network is fitted (defaults chosen on A. thaliana chromosome 1 validation, splice sites)."""

    steps: int = 1500
    batch_size: int = 16
    crop: int = 4000  # bases per crop, both reaches included
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError(f"site network training needs steps, batch size >= 1, lr > 0, weight decay and "
                              f"warmup >= 0; got {self}")


@dataclass
class SiteModel:
    """A trained network, the candidate words of each kind it scores (``words``' order is the network's
    output rows), the settings its owner reads it with, and a training summary."""

    network: SiteNetwork
    words: dict[str, tuple[str, ...]]  # kind -> the words a candidate site of that kind begins with
    settings: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.network.kinds

    @torch.no_grad()
    def logits(self, codes: np.ndarray) -> np.ndarray:
        """(kinds, n + 1) float32 log-odds of one strand (``codes`` read 5' -> 3'), a row per kind (position n,
        past the end: 0). Meaningful at candidate positions only."""
        self.network.eval()
        n, reach = len(codes), self.network.config.reach
        out = np.zeros((len(self.kinds), n + 1), np.float32)
        device = next(self.network.parameters()).device
        for start in range(0, n, PREDICT_CHUNK):
            lo, hi = max(0, start - reach), min(n, start + PREDICT_CHUNK + reach)
            end = min(n, start + PREDICT_CHUNK)
            piece = torch.as_tensor(codes[lo:hi].astype(np.int64), device=device)[None]
            logits = self.network(one_hot_bases(piece))[0].float().cpu().numpy()  # (kinds, hi - lo)
            out[:, start:end] = logits[:, start - lo:end - lo]
        return out

    def save(self, folder: str | Path, stem: str) -> None:
        """Write ``STEM.json`` and ``STEM.safetensors`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = save({k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()})
        with atomic_write(folder / f"{stem}.safetensors", "wb") as handle:
            handle.write(weights)
        # The JSON names its weights (their digest): a crash between the two writes cannot pair new weights
        # with an older file's settings unnoticed.
        data = {"format": FILE_FORMAT, "format_version": FILE_VERSION, "config": self.network.config.to_dict(),
                "kinds": list(self.kinds), "words": {kind: list(self.words[kind]) for kind in self.kinds},
                "weights_sha256": hashlib.sha256(weights).hexdigest(), "settings": self.settings, "report": self.report}
        with atomic_write(folder / f"{stem}.json") as handle:
            json.dump(data, handle, indent=1)

    @classmethod
    def load(cls, folder: str | Path, stem: str, kinds: tuple[str, ...], word_length: int, remedy: str) -> "SiteModel":
        """Read ``STEM.json`` and ``STEM.safetensors`` of ``folder``, which must score ``kinds`` with candidate words
        of ``word_length`` letters. Refuses another format or version, missing or malformed fields and weights
        that do not fit the configuration, naming the file and ending with ``remedy`` (what to do)."""
        path = Path(folder) / f"{stem}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelFileError(path, "site network file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(path, f"not a readable JSON site network file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ModelFileError(path, f"not a site network file (expected \"format\": \"{FILE_FORMAT}\")")
        if data.get("format_version") != FILE_VERSION:
            raise ModelFileError(path, f"site network field 'format_version': this genoformer reads version "
                                       f"{FILE_VERSION}, the file has {data.get('format_version')!r}; {remedy}")
        for name in ("config", "kinds", "words"):
            if name not in data:
                raise ModelFileError(path, f"site network field {name!r}: missing")
        if data["kinds"] != list(kinds):
            raise ModelFileError(path, f"site network field 'kinds': this genoformer scores {list(kinds)} here, the "
                                       f"file {data['kinds']!r}; {remedy}")
        try:
            config = SiteNetworkConfig(**data["config"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(path, f"site network field 'config': {exc}") from None
        words = data["words"]
        for kind in kinds:
            value = words.get(kind) if isinstance(words, dict) else None
            if not isinstance(value, list) or not value or not all(
                    isinstance(w, str) and len(w) == word_length and set(w) <= set("ACGT") for w in value):
                raise ModelFileError(path, f"site network field 'words': {kind} needs a list of {word_length}-letter "
                                           f"words, got {value!r}")
        settings = data.get("settings", {})
        if not isinstance(settings, dict):
            raise ModelFileError(path, f"site network field 'settings': needs a mapping, got {settings!r}")
        weights_path = Path(folder) / f"{stem}.safetensors"
        try:
            raw = weights_path.read_bytes()
        except FileNotFoundError:
            raise ModelFileError(weights_path, "site network weights not found") from None
        except OSError as exc:
            raise ModelFileError(weights_path, f"not readable ({exc})") from None
        if data.get("weights_sha256", hashlib.sha256(raw).hexdigest()) != hashlib.sha256(raw).hexdigest():
            raise ModelFileError(weights_path, f"these weights are not the ones {path.name} was written with (their "
                                               f"digest differs): {remedy}")
        try:
            state = load(raw)
        except (SafetensorError, KeyError, ValueError, TypeError) as exc:  # KeyError: a dtype this torch lacks
            raise ModelFileError(weights_path, f"not a readable safetensors file ({exc!r})") from None
        network = SiteNetwork(config, kinds)
        expected = {k: (tuple(v.shape), v.dtype) for k, v in network.state_dict().items()}
        found = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
        if expected != found:
            wrong = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
            raise ModelFileError(weights_path, f"weights do not fit the configuration in {path.name} "
                                               f"(first mismatch: {wrong[0]})")
        network.load_state_dict(state)
        network.eval()
        return cls(network, {kind: tuple(words[kind]) for kind in kinds}, settings, report=data.get("report") or {})


def train_site_network(views: Sequence[np.ndarray], labels: Sequence[np.ndarray], kinds: tuple[str, ...],
                       config: SiteNetworkConfig, training: SiteTraining,
                       progress: Callable[[str], None] | None = None, name: str = "site network") -> SiteNetwork:
    """A network fitted to ``labels`` (one (kinds, len(view)) int8 array per view: 1, 0 or UNLABELLED) of
    ``views`` (base codes read 5' -> 3'); see the module. ``progress`` lines begin with ``name``."""
    with torch.random.fork_rng():  # seeded here, without resetting the caller's random state
        torch.manual_seed(training.seed)
        return _train(views, labels, kinds, config, training, progress, name)


def _train(views: Sequence[np.ndarray], labels: Sequence[np.ndarray], kinds: tuple[str, ...],
           config: SiteNetworkConfig, training: SiteTraining, progress: Callable[[str], None] | None,
           name: str) -> SiteNetwork:
    rng = np.random.default_rng(training.seed)
    began = time.perf_counter()
    reach = config.reach
    crop = max(training.crop, 2 * reach + 1)
    sizes = np.array([len(v) for v in views], dtype=np.float64)
    network = SiteNetwork(config, kinds)
    optimiser = torch.optim.AdamW(network.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    network.train()
    for step in range(training.steps):
        codes = np.full((training.batch_size, crop), 4, np.int64)  # N past a short view's end
        targets = np.full((training.batch_size, len(kinds), crop), UNLABELLED, np.int64)
        for b, v in enumerate(rng.choice(len(views), size=training.batch_size, p=sizes / sizes.sum())):
            start = int(rng.integers(0, max(1, len(views[v]) - crop + 1)))
            piece = views[v][start:start + crop]
            codes[b, :len(piece)] = piece
            targets[b, :, :len(piece)] = labels[v][:, start:start + crop]
        targets[..., :reach] = targets[..., crop - reach:] = UNLABELLED
        target = torch.as_tensor(targets)
        labelled = target != UNLABELLED
        if not labelled.any():  # every crop in N runs or too near a view's end: no loss to learn from
            continue
        scale = min(1.0, (step + 1) / max(1, training.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / training.steps))
        for group in optimiser.param_groups:
            group["lr"] = training.lr * scale
        logits = network(one_hot_bases(torch.as_tensor(codes)))  # (batch, kinds, crop)
        loss = F.binary_cross_entropy_with_logits(logits[labelled], target[labelled].float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress and (step % 100 == 0 or step == training.steps - 1):
            progress(f"{name} step {step + 1}/{training.steps}: loss {loss.item():.4f} "
                     f"({time.perf_counter() - began:.0f} s)")
    return network.eval()
