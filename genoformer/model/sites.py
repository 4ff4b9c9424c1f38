"""A site network: a dilated residual convolution that scores every position of a strand as a site of
one or more kinds: splice donors and acceptors for the eukaryote gene model, translation starts for the
prokaryote decoder.

A site's evidence lies within about a hundred bases of it (a splice site's exon codons, GT, branch point
and pyrimidine tract; a start's ribosome binding site upstream and the coding sequence downstream), and
a convolution reads that window at every position of a chromosome for a fraction of what attention
costs. It is the nonlinear counterpart of the decoders' linear site models
(``genoformer.genemodel.signals``, ``genoformer.decode.start_sites``): the same windows, but
interactions between positions and a wider reach.

    net = SiteNetwork(SiteNetworkConfig(), kinds=("donor", "acceptor"))
    logits = net(one_hot)   # (batch, 5, length) -> (batch, 2, length): log-odds of each kind at each base
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

BASE_CODES = 5  # A, C, G, T and N (``genoformer.decode.segments.encode_bases`` codes)


@dataclass(frozen=True)
class SiteNetworkConfig:
    """Width and reach of the network: ``dilations`` gives one residual convolution each."""

    channels: int = 48
    kernel_size: int = 11
    dilations: tuple[int, ...] = (1, 1, 4, 4, 10, 10)

    def __post_init__(self):
        object.__setattr__(self, "dilations", tuple(self.dilations))
        sizes = (self.channels, self.kernel_size, *self.dilations)
        if (not all(type(x) is int for x in sizes) or not 1 <= self.channels <= 1024 or not 1 <= self.kernel_size <= 101
                or self.kernel_size % 2 == 0 or not 1 <= len(self.dilations) <= 32
                or not all(1 <= d <= 1000 for d in self.dilations)):
            raise ValueError(f"site network needs whole numbers: channels 1-1024, an odd kernel size up to 101 and "
                             f"1-32 dilations of 1-1000, got {self}")

    @property
    def reach(self) -> int:
        """Bases either side of a position that its output reads (the receptive field's half-width)."""
        return sum(d * (self.kernel_size - 1) // 2 for d in self.dilations)

    def to_dict(self) -> dict:
        return {**asdict(self), "dilations": list(self.dilations)}


class ResidualConvolution(nn.Module):
    """x + conv(gelu(norm(x))): one dilated convolution, length-preserving."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.gelu(self.norm(x)))  # (batch, channels, length)


class SiteNetwork(nn.Module):
    """One-hot bases (batch, 5, length) -> (batch, kinds, length) logits, one row per name in ``kinds``: that a
    site of that kind lies at each position (what a position means is the kind's: a splice donor's is
    the boundary before the intron's first base, a start's the start codon's first base)."""

    def __init__(self, config: SiteNetworkConfig, kinds: tuple[str, ...]):
        super().__init__()
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"a site network needs one or more distinct kinds of site, got {kinds!r}")
        self.config, self.kinds = config, tuple(kinds)
        self.embed = nn.Conv1d(BASE_CODES, config.channels, 1)
        self.blocks = nn.ModuleList(ResidualConvolution(config.channels, config.kernel_size, d) for d in config.dilations)
        self.out = nn.Conv1d(config.channels, len(self.kinds), 1)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        h = self.embed(one_hot)  # (batch, channels, length)
        for block in self.blocks:
            h = block(h)
        return self.out(F.gelu(h))  # (batch, kinds, length)


def one_hot_bases(codes: torch.Tensor) -> torch.Tensor:
    """(batch, length) base codes 0-4 -> (batch, 5, length) float one-hot."""
    return F.one_hot(codes.long(), BASE_CODES).transpose(1, 2).float()
