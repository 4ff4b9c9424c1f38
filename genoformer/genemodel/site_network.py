"""The gene model's splice-site network: trained on the training regions' annotated introns, stored in
the gene model's folder, read at decoding time as evidence on each candidate donor and acceptor.

Training (:func:`fit_site_network`) reads both strands of the training regions. Every donor and acceptor
candidate the decoder would consider (the gene model's donor and acceptor dinucleotides) is a labelled
position of its kind: 1 where an annotated coding transcript (any isoform) splices there, 0 elsewhere;
other bases carry no label. Random crops of both strands are drawn, and the network
(:class:`genoformer.model.sites.SiteNetwork`) is fitted by binary cross-entropy at the labelled
positions of each crop's interior (a network's reach from either crop edge, where its padding would
stand in for sequence, is left out).

Its output is the log-odds that a candidate is a real site, at the training set's share of real sites
among candidates. :class:`~genoformer.genemodel.evidence.EvidenceWeights` scales and shifts it into the
gene model's signal scores (fitted on validation regions).

Files (beside ``gene_model.json``, never pickle): ``site_network.json`` (format, configuration, the
candidate words and a training summary) and ``site_network.safetensors`` (the weights).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from genoformer.decode.eukaryote import signal_positions
from genoformer.decode.segments import encode_bases, reverse_complement_codes
from genoformer.errors import ConfigError, ModelFileError
from genoformer.files import atomic_write
from genoformer.genemodel.training import _merged, coding_transcripts
from genoformer.genome.intervals import Interval
from genoformer.model.sites import SITE_KINDS, SiteNetwork, SiteNetworkConfig, one_hot_bases

CONFIG_FILE = "site_network.json"
WEIGHTS_FILE = "site_network.safetensors"
FILE_FORMAT = "genoformer site network"
FILE_VERSION = 1
UNLABELLED = -1
PREDICT_CHUNK = 200_000  # bases per forward pass at prediction (plus the reach either side)


@dataclass(frozen=True)
class SiteTraining:
    """How the network is fitted (defaults chosen on A. thaliana chromosome 1 validation)."""

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


def site_labels(codes: np.ndarray, real: dict[str, Sequence[int]], words: dict[str, Sequence[str]]) -> np.ndarray:
    """(kinds, n) int8 labels of one strand (``codes`` in strand coordinates), a row per ``SITE_KINDS``: at
    each candidate boundary of a kind (its ``words``) 1 if ``real`` lists it (boundaries, strand
    coordinates), else 0; :data:`UNLABELLED` at other positions and at listed sites that are not candidates."""
    n = len(codes)
    candidates = signal_positions(codes, starts=(), stops=(), donors=words["donor"], acceptors=words["acceptor"])
    labels = np.full((len(SITE_KINDS), n), UNLABELLED, np.int8)
    for row, kind in enumerate(SITE_KINDS):
        at = candidates[kind]
        labels[row, at[at < n]] = 0
        listed = np.asarray(sorted(set(real.get(kind, ()))), dtype=np.int64)
        listed = listed[(listed >= 0) & (listed < n)]
        labels[row, listed[labels[row, listed] == 0]] = 1
    return labels


def region_sites(annotation: pd.DataFrame, region: Interval, by_record: dict | None = None) -> dict[str, dict]:
    """The donors and acceptors of every coding transcript wholly inside ``region``, as boundaries in each
    strand's coordinates within the region: ``{"+": {"donor": [...], "acceptor": [...]}, "-": {...}}``."""
    if by_record is not None and region.name in by_record:
        pieces = by_record[region.name]
    else:
        pieces = coding_transcripts(annotation, region.name)
        if by_record is not None:
            by_record[region.name] = pieces
    n = len(region)
    sites = {strand: {kind: [] for kind in SITE_KINDS} for strand in "+-"}
    inside = pieces[(pieces["start"] >= region.start) & (pieces["end"] <= region.end)]
    spans = pieces.groupby("transcript")[["start", "end"]].agg({"start": "min", "end": "max"})
    whole = set(spans.index[(spans["start"] >= region.start) & (spans["end"] <= region.end)])
    for transcript, rows in inside[inside["transcript"].isin(whole)].groupby("transcript", sort=False):
        strand = rows["strand"].iloc[0]
        if strand not in sites:
            continue
        exons = _merged(rows[["start", "end"]].to_numpy() - region.start)
        if strand == "-":
            exons = [(n - e, n - s) for s, e in exons[::-1]]
        for (_, donor), (acceptor, _) in zip(exons, exons[1:]):
            sites[strand]["donor"].append(donor)
            sites[strand]["acceptor"].append(acceptor)
    return sites


@dataclass
class SiteModel:
    """A trained :class:`~genoformer.model.sites.SiteNetwork` and the candidate words of each kind it scores."""

    network: SiteNetwork
    words: dict[str, tuple[str, ...]]  # kind (donor, acceptor) -> its candidate dinucleotides
    report: dict = field(default_factory=dict)

    @torch.no_grad()
    def logits(self, codes: np.ndarray) -> np.ndarray:
        """(kinds, n + 1) float32 log-odds of one strand (``codes`` in strand coordinates), a row per
        ``SITE_KINDS``: that boundary x is a donor, an acceptor (boundary n: 0). Read at candidate
        boundaries only."""
        self.network.eval()
        n, reach = len(codes), self.network.config.reach
        out = np.zeros((len(SITE_KINDS), n + 1), np.float32)
        device = next(self.network.parameters()).device
        for start in range(0, n, PREDICT_CHUNK):
            lo, hi = max(0, start - reach), min(n, start + PREDICT_CHUNK + reach)
            end = min(n, start + PREDICT_CHUNK)
            piece = torch.as_tensor(codes[lo:hi].astype(np.int64), device=device)[None]
            logits = self.network(one_hot_bases(piece))[0].float().cpu().numpy()  # (kinds, hi - lo)
            out[:, start:end] = logits[:, start - lo:end - lo]
        return out

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path) -> None:
        """Write ``site_network.json`` and ``site_network.safetensors`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / WEIGHTS_FILE, "wb") as handle:
            handle.write(save({k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}))
        data = {"format": FILE_FORMAT, "format_version": FILE_VERSION, "config": self.network.config.to_dict(),
                "kinds": list(SITE_KINDS), "words": {kind: list(self.words[kind]) for kind in SITE_KINDS},
                "report": self.report}
        with atomic_write(folder / CONFIG_FILE) as handle:
            json.dump(data, handle, indent=1)

    @classmethod
    def load(cls, folder: str | Path) -> "SiteModel":
        """Read a folder written by :meth:`save`; refuses another format or version, missing or malformed
        fields and weights that do not fit the configuration, naming the file."""
        folder = Path(folder)
        path = folder / CONFIG_FILE
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
                                       f"{FILE_VERSION}, the file has {data.get('format_version')!r}; learn the gene "
                                       "model again with this version")
        for name in ("config", "kinds", "words"):
            if name not in data:
                raise ModelFileError(path, f"site network field {name!r}: missing")
        if data["kinds"] != list(SITE_KINDS):
            raise ModelFileError(path, f"site network field 'kinds': this genoformer scores {list(SITE_KINDS)}, the "
                                       f"file {data['kinds']!r}; learn the gene model again with this version")
        try:
            config = SiteNetworkConfig(**data["config"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(path, f"site network field 'config': {exc}") from None
        words = data["words"]
        for kind, size in zip(SITE_KINDS, (2, 2)):
            value = words.get(kind) if isinstance(words, dict) else None
            if not isinstance(value, list) or not value or not all(
                    isinstance(w, str) and len(w) == size and set(w) <= set("ACGT") for w in value):
                raise ModelFileError(path, f"site network field 'words': {kind} needs a list of {size}-letter words, "
                                           f"got {value!r}")
        weights_path = folder / WEIGHTS_FILE
        try:
            state = load_file(str(weights_path))
        except FileNotFoundError:
            raise ModelFileError(weights_path, "site network weights not found") from None
        except (OSError, SafetensorError) as exc:
            raise ModelFileError(weights_path, f"not a readable safetensors file ({exc})") from None
        network = SiteNetwork(config)
        expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if expected != found:
            wrong = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
            raise ModelFileError(weights_path, f"weights do not fit the configuration in {CONFIG_FILE} "
                                               f"(first mismatch: {wrong[0]})")
        network.load_state_dict(state)
        network.eval()
        return cls(network, {kind: tuple(words[kind]) for kind in SITE_KINDS}, report=data.get("report") or {})


def fit_site_network(genome, annotation: pd.DataFrame, regions: Iterable[Interval], *, words: dict[str, Sequence[str]],
                     config: SiteNetworkConfig | None = None, training: SiteTraining | None = None,
                     progress: Callable[[str], None] | None = None) -> SiteModel:
    """Train a site network on the annotated introns of ``regions`` of ``genome`` (see the module);
    ``words``: each kind's candidate dinucleotides (``{"donor": ("GC", "GT"), "acceptor": ("AG",)}``)."""
    words = {kind: tuple(words[kind]) for kind in SITE_KINDS}
    regions = list(regions)
    config, training = config or SiteNetworkConfig(), training or SiteTraining()
    with torch.random.fork_rng():  # seeded here, without resetting the caller's random state
        torch.manual_seed(training.seed)
        return _train(genome, annotation, regions, words, config, training, progress)


def _train(genome, annotation: pd.DataFrame, regions: list[Interval], words: dict[str, tuple[str, ...]],
           config: SiteNetworkConfig, training: SiteTraining, progress: Callable[[str], None] | None) -> SiteModel:
    rng = np.random.default_rng(training.seed)
    began = time.perf_counter()
    views, labels = [], []
    by_record: dict = {}
    for region in regions:
        codes = encode_bases(genome.fetch(region.name, region.start, region.end))
        sites = region_sites(annotation, region, by_record)
        for strand, view in (("+", codes), ("-", reverse_complement_codes(codes))):
            views.append(view)
            labels.append(site_labels(view, sites[strand], words))
    real = {kind: int(sum((lab[row] == 1).sum() for lab in labels)) for row, kind in enumerate(SITE_KINDS)}
    if min(real.values()) == 0:
        names = ", ".join(sorted({iv.name for iv in regions})) or "none"
        raise ConfigError(f"the site network learns from annotated introns, but the training regions "
                          f"({names}) hold " + ", ".join(f"{count} {kind}s" for kind, count in real.items())
                          + " at candidate words")
    reach = config.reach
    crop = max(training.crop, 2 * reach + 1)
    sizes = np.array([len(v) for v in views], dtype=np.float64)
    network = SiteNetwork(config)
    optimiser = torch.optim.AdamW(network.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    network.train()
    for step in range(training.steps):
        codes = np.full((training.batch_size, crop), 4, np.int64)  # N past a short view's end
        targets = np.full((training.batch_size, len(SITE_KINDS), crop), UNLABELLED, np.int64)
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
            progress(f"site network step {step + 1}/{training.steps}: loss {loss.item():.4f}")
    network.eval()
    report = {**{f"{kind}s": count for kind, count in real.items()}, "steps": training.steps,
              "training seconds": round(time.perf_counter() - began, 1)}
    return SiteModel(network, words, report)
