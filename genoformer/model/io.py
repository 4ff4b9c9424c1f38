"""Save and load an exported model folder.

A model folder holds exactly three files with fixed names, so no setting inside a downloaded
folder names a path; a file that is a symbolic link resolving outside the folder is refused:

- ``config.json``: format version, the :class:`ReformerConfig`, the task and its head settings
  (e.g. the label scheme of a tagger), all plain JSON;
- ``model.safetensors``: the weights (safetensors never executes code on load);
- ``tokenizer.json``: the tokenizer, so a model always carries the vocabulary it was trained with.

The folder is written next to its destination and renamed into place, so an interrupted export
leaves the old folder (or none), never a half-written one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ConfigError, ModelFileError
from ..files import temporary_sibling
from ..tokenize import Tokenizer
from .config import ReformerConfig

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# A prokaryote tagger's folder may also hold a start network trained beside it later
# (genoformer.decode.start_network): STEM.json and STEM.safetensors. Replacing the folder drops it.
START_NETWORK_STEM = "start_network"
# Largest head.window_length accepted: above the longest human chromosome (248 Mb); a window is
# padded to its full length in every batch, so an absurd value would ask for terabytes.
MAX_WINDOW_LENGTH = 1 << 28
ORGANISMS = ("prokaryote", "eukaryote")


@dataclass
class PretrainedModel:
    """What a model folder holds, read and validated but not yet bound to modules."""

    folder: Path
    config: ReformerConfig
    tokenizer: Tokenizer
    task: str
    head: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    def check_fits(self, module: torch.nn.Module, *, prefix: str = "", strict: bool = True) -> None:
        """Refuse, naming every kind of mismatch, when the weights whose names start with ``prefix``
        do not fit ``module``: it may be built on the meta device, so a config.json that describes
        a far larger network than model.safetensors holds is refused before any memory is used."""
        weights = {k[len(prefix):]: v.shape for k, v in self.state_dict.items() if k.startswith(prefix)}
        expected = {k: v.shape for k, v in module.state_dict().items()}
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected)) if strict else []
        wrong_shape = [k for k in expected if k in weights and weights[k] != expected[k]]
        if not (missing or unexpected or wrong_shape):
            return
        problems = []
        if missing:
            problems.append(f"missing tensors {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            problems.append(f"unexpected tensors {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        for k in wrong_shape[:3]:
            problems.append(f"{k} has shape {tuple(weights[k])}, model expects {tuple(expected[k])}")
        described, held = (sum(math.prod(shape) for shape in shapes.values()) for shapes in (expected, weights))
        if described != held:
            problems.append(f"config.json describes {described:,} parameters, {WEIGHTS_FILE} holds {held:,}")
        raise ModelFileError(self.folder / WEIGHTS_FILE, "weights do not match config.json: " + "; ".join(problems))

    def load_into(self, module: torch.nn.Module, *, prefix: str = "", strict: bool = True) -> None:
        """Load the weights whose names start with ``prefix`` into ``module``; name any mismatch."""
        self.check_fits(module, prefix=prefix, strict=strict)
        expected = module.state_dict()
        module.load_state_dict({k: self.state_dict[prefix + k] for k in expected}, strict=True)


def save_pretrained(
    folder: str | os.PathLike,
    module: torch.nn.Module,
    config: ReformerConfig,
    tokenizer: Tokenizer,
    *,
    task: str,
    head: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``module``'s weights with its config and tokenizer into ``folder`` atomically.

    An existing ``folder`` is replaced only with ``overwrite`` and only if it is a model folder (see
    :func:`check_replaceable`): genoformer never deletes what it did not write."""
    folder = Path(folder)
    check_replaceable(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(folder, directory=True)
    try:
        meta = {"format": "genoformer", "format_version": FORMAT_VERSION, "task": task,
                "model": config.to_dict(), "head": head or {}}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "genoformer"})
        # safetensors creates its file owner-only (0600); give it config.json's ordinary permissions.
        os.chmod(tmp / WEIGHTS_FILE, (tmp / CONFIG_FILE).stat().st_mode & 0o777)
        tokenizer.save(tmp / TOKENIZER_FILE)
        old = None
        if folder.exists():
            # A fresh hidden name (a fixed one could be someone's folder): the replaced model goes there.
            old = temporary_sibling(folder, directory=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _check_head(path: Path, task: str, head: dict[str, Any]) -> None:
    """Refuse head settings that would fail later with a traceback or ask for absurd memory."""
    window = head.get("window_length")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or not 0 <= window <= MAX_WINDOW_LENGTH):
        raise ModelFileError(path, f"head.window_length must be a whole number of bases from 1 to "
                                   f"{MAX_WINDOW_LENGTH:,} (0: not recorded), got {window!r}")
    organism = head.get("organism")
    if organism is not None and organism not in ORGANISMS:
        raise ModelFileError(path, f"head.organism must be one of {', '.join(map(repr, ORGANISMS))}, got {organism!r}")
    if task != "tagging":
        return
    classes = head.get("classes")
    if (not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes)
            or not all(isinstance(c, str) and c for c in classes)):
        raise ModelFileError(path, f"head.classes must be a list of at least 2 distinct class names, got {classes!r}")
    if "scheme" not in head:
        raise ModelFileError(path, "head.scheme (the label scheme of a tagging model) is missing")
    from ..genome.labels import LabelScheme

    try:
        scheme = LabelScheme.from_dict(head["scheme"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"head.scheme is invalid: {exc}") from None
    if list(scheme.classes) != classes:
        raise ModelFileError(path, f"head.scheme classes {list(scheme.classes)} differ from head.classes {classes}")


def check_replaceable(folder: Path, overwrite: bool) -> None:
    """Refuse to write a model folder over anything but a model folder, and over one without ``overwrite``.

    A model folder is a directory holding ``config.json`` (a genoformer one) and ``model.safetensors``,
    and nothing but the three files a model folder has and a start network's two."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise ConfigError(f"{folder} exists and is not a model folder; genoformer replaces only model folders "
                          "it wrote: choose another output path or move it away")
    contents = sorted(p.name for p in folder.iterdir())
    known = {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, f"{START_NETWORK_STEM}.json", f"{START_NETWORK_STEM}.safetensors"}
    # A killed write leaves a hidden .NAME.<random>.tmp sibling (genoformer.files): ours, replaced with the rest.
    unexpected = sorted(n for n in set(contents) - known if not (n.startswith(".") and n.endswith(".tmp")))
    try:
        ours = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == "genoformer"
    except (OSError, ValueError, AttributeError):
        ours = False
    if unexpected or not ours or not (folder / WEIGHTS_FILE).is_file():
        holds = f"holds {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}" if unexpected else \
            f"lacks a genoformer {CONFIG_FILE} and {WEIGHTS_FILE}"
        raise ConfigError(f"{folder} exists and is not a model folder (it {holds}); genoformer replaces only "
                          "model folders it wrote: choose another output path or move it away")
    if not overwrite:
        raise ConfigError(f"{folder} already holds a model folder: pass --overwrite (overwrite=True) to replace "
                          "it, or choose another output path")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"not valid JSON ({exc})") from None


def load_pretrained(folder: str | os.PathLike) -> PretrainedModel:
    """Read and validate a model folder written by :func:`save_pretrained`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(folder, "model folder not found" if not folder.exists() else "not a folder")
    inside = folder.resolve()
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        path = folder / name
        if not path.is_file():
            raise ModelFileError(path, "missing from the model folder" if not path.exists() else "not a file")
        # A link to e.g. ~/.ssh/id_rsa or another model's weights must not be read as part of this model.
        if not path.resolve().is_relative_to(inside):
            raise ModelFileError(path, f"is a link to {path.resolve()}, outside the model folder; refusing to read it")
    meta = _read_json(folder / CONFIG_FILE)
    if not isinstance(meta, dict) or meta.get("format") != "genoformer":
        raise ModelFileError(folder / CONFIG_FILE, "not a genoformer model config")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(folder / CONFIG_FILE,
                             f"format version {meta.get('format_version')!r}, this genoformer reads {FORMAT_VERSION}")
    try:
        config = ReformerConfig.from_dict(meta["model"])
    except KeyError:
        raise ModelFileError(folder / CONFIG_FILE, "has no 'model' settings") from None
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelFileError(folder / CONFIG_FILE, f"invalid model settings: {exc}") from None
    head = meta.get("head") or {}
    if not isinstance(head, dict):
        raise ModelFileError(folder / CONFIG_FILE, "'head' must be a mapping")
    _check_head(folder / CONFIG_FILE, str(meta.get("task", "")), head)
    described = _read_json(folder / TOKENIZER_FILE)
    try:
        tokenizer = Tokenizer.from_dict(described)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelFileError(folder / TOKENIZER_FILE, f"invalid tokenizer: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise ModelFileError(folder / TOKENIZER_FILE,
                             f"tokenizer has {tokenizer.vocab_size} tokens, config.json says {config.vocab_size}")
    try:
        state_dict = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(folder / WEIGHTS_FILE, f"cannot read the weights as safetensors ({exc})") from None
    return PretrainedModel(folder, config, tokenizer, str(meta.get("task", "")), dict(head), state_dict)
