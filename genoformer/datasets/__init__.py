"""Torch datasets that turn genome windows into token ids and per-base labels."""
from .windows import (IGNORE_LABEL, RandomWindowDataset, ResumableLoader, TiledWindowDataset, WindowStream,
                      encode_window)

__all__ = ["IGNORE_LABEL", "RandomWindowDataset", "ResumableLoader", "TiledWindowDataset", "WindowStream",
           "encode_window"]
