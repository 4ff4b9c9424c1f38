"""The gene model's splice-site network: trained on the training regions' annotated introns, stored in
the gene model's folder, read at decoding time as evidence on each candidate donor and acceptor.

Training (:func:`fit_site_network`) reads both strands of the training regions. Every donor and acceptor
candidate the decoder would consider (the gene model's donor and acceptor dinucleotides) is a labelled
position: 1 where an annotated coding transcript (any isoform) splices there, 0 elsewhere; other bases
carry no label. Random crops of both strands are drawn, and the network (``genoformer.model.sites``)
is fitted by binary cross-entropy at the labelled positions of each crop's interior (a network's
reach from either crop edge, where its padding would stand in for sequence, is left out).

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
from genoformer.model.sites import SITE_KINDS, SiteNetworkConfig, SpliceSiteNetwork, one_hot_bases

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


def site_labels(codes: np.ndarray, donors: Sequence[int], acceptors: Sequence[int], donor_words: Sequence[str],
                acceptor_words: Sequence[str]) -> np.ndarray:
    """(2, n) int8 labels of one strand (``codes`` in strand coordinates): row 0 donors, row 1 acceptors;
    at each candidate boundary 1 if it is listed in ``donors`` / ``acceptors`` (boundaries, strand
    coordinates), else 0; :data:`UNLABELLED` at other positions and at listed sites that are not candidates."""
    n = len(codes)
    candidates = signal_positions(codes, starts=(), stops=(), donors=donor_words, acceptors=acceptor_words)
    labels = np.full((2, n), UNLABELLED, np.int8)
    for row, (kind, real) in enumerate(zip(SITE_KINDS, (donors, acceptors))):
        at = candidates[kind]
        at = at[at < n]
        labels[row, at] = 0
        real = np.asarray(sorted(set(real)), dtype=np.int64)
        real = real[(real >= 0) & (real < n)]
        labels[row, real[labels[row, real] == 0]] = 1
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
class SiteNetwork:
    """A trained :class:`~genoformer.model.sites.SpliceSiteNetwork` and the candidate words it scores."""

    network: SpliceSiteNetwork
    donor_words: tuple[str, ...]
    acceptor_words: tuple[str, ...]
    report: dict = field(default_factory=dict)

    @torch.no_grad()
    def logits(self, codes: np.ndarray) -> np.ndarray:
        """(2, n + 1) float32 log-odds of one strand (``codes`` in strand coordinates): row 0 that boundary x
        is a donor, row 1 an acceptor (boundary n: 0). Read at candidate boundaries only."""
        self.network.eval()
        n, reach = len(codes), self.network.config.reach
        out = np.zeros((2, n + 1), np.float32)
        device = next(self.network.parameters()).device
        for start in range(0, n, PREDICT_CHUNK):
            lo, hi = max(0, start - reach), min(n, start + PREDICT_CHUNK + reach)
            end = min(n, start + PREDICT_CHUNK)
            piece = torch.as_tensor(codes[lo:hi].astype(np.int64), device=device)[None]
            logits = self.network(one_hot_bases(piece))[0].float().cpu().numpy()  # (2, hi - lo)
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
                "donor_words": list(self.donor_words), "acceptor_words": list(self.acceptor_words),
                "report": self.report}
        with atomic_write(folder / CONFIG_FILE) as handle:
            json.dump(data, handle, indent=1)

    @classmethod
    def load(cls, folder: str | Path) -> "SiteNetwork":
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
        for name in ("config", "donor_words", "acceptor_words"):
            if name not in data:
                raise ModelFileError(path, f"site network field {name!r}: missing")
        try:
            config = SiteNetworkConfig(**data["config"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(path, f"site network field 'config': {exc}") from None
        words = {}
        for name in ("donor_words", "acceptor_words"):
            value = data[name]
            if not isinstance(value, list) or not value or not all(
                    isinstance(w, str) and len(w) == 2 and set(w) <= set("ACGT") for w in value):
                raise ModelFileError(path, f"site network field {name!r}: expected a list of dinucleotides, got {value!r}")
            words[name] = tuple(value)
        weights_path = folder / WEIGHTS_FILE
        try:
            state = load_file(str(weights_path))
        except FileNotFoundError:
            raise ModelFileError(weights_path, "site network weights not found") from None
        except (OSError, SafetensorError) as exc:
            raise ModelFileError(weights_path, f"not a readable safetensors file ({exc})") from None
        network = SpliceSiteNetwork(config)
        expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if expected != found:
            wrong = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
            raise ModelFileError(weights_path, f"weights do not fit the configuration in {CONFIG_FILE} "
                                               f"(first mismatch: {wrong[0]})")
        network.load_state_dict(state)
        network.eval()
        return cls(network, report=data.get("report") or {}, **words)


def fit_site_network(genome, annotation: pd.DataFrame, regions: Iterable[Interval], *, donor_words: Sequence[str],
                     acceptor_words: Sequence[str], config: SiteNetworkConfig | None = None,
                     training: SiteTraining | None = None,
                     progress: Callable[[str], None] | None = None) -> SiteNetwork:
    """Train a site network on the annotated introns of ``regions`` of ``genome`` (see the module)."""
    config, training = config or SiteNetworkConfig(), training or SiteTraining()
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    began = time.perf_counter()
    views, labels = [], []
    by_record: dict = {}
    for region in regions:
        codes = encode_bases(genome.fetch(region.name, region.start, region.end))
        sites = region_sites(annotation, region, by_record)
        for strand, view in (("+", codes), ("-", reverse_complement_codes(codes))):
            views.append(view)
            labels.append(site_labels(view, sites[strand]["donor"], sites[strand]["acceptor"], donor_words,
                                      acceptor_words))
    real = [int(sum((lab[row] == 1).sum() for lab in labels)) for row in range(2)]
    if min(real, default=0) == 0:
        names = ", ".join(sorted({iv.name for iv in regions})) or "none"
        raise ConfigError(f"the site network learns from annotated introns, but the training regions ({names}) hold "
                          f"{real[0]} donors and {real[1]} acceptors at candidate dinucleotides")
    reach = config.reach
    crop = max(training.crop, 2 * reach + 1)
    sizes = np.array([len(v) for v in views], dtype=np.float64)
    network = SpliceSiteNetwork(config)
    optimiser = torch.optim.AdamW(network.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    network.train()
    for step in range(training.steps):
        codes = np.full((training.batch_size, crop), 4, np.int64)  # N past a short view's end
        targets = np.full((training.batch_size, 2, crop), UNLABELLED, np.int64)
        for b, v in enumerate(rng.choice(len(views), size=training.batch_size, p=sizes / sizes.sum())):
            start = int(rng.integers(0, max(1, len(views[v]) - crop + 1)))
            piece = views[v][start:start + crop]
            codes[b, :len(piece)] = piece
            targets[b, :, :len(piece)] = labels[v][:, start:start + crop]
        targets[..., :reach] = targets[..., crop - reach:] = UNLABELLED
        target = torch.as_tensor(targets)
        labelled = target != UNLABELLED
        scale = min(1.0, (step + 1) / max(1, training.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / training.steps))
        for group in optimiser.param_groups:
            group["lr"] = training.lr * scale
        logits = network(one_hot_bases(torch.as_tensor(codes)))  # (batch, 2, crop)
        loss = F.binary_cross_entropy_with_logits(logits[labelled], target[labelled].float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress and (step % 100 == 0 or step == training.steps - 1):
            progress(f"site network step {step + 1}/{training.steps}: loss {loss.item():.4f}")
    network.eval()
    report = {"donors": real[0], "acceptors": real[1], "steps": training.steps,
              "training seconds": round(time.perf_counter() - began, 1)}
    return SiteNetwork(network, tuple(donor_words), tuple(acceptor_words), report)
