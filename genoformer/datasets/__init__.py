"""Torch datasets that turn genome windows into token ids and per-base labels."""
from .windows import IGNORE_LABEL, EpochSampler, RandomWindowDataset, TiledWindowDataset, encode_window

__all__ = ["IGNORE_LABEL", "EpochSampler", "RandomWindowDataset", "TiledWindowDataset", "encode_window"]
