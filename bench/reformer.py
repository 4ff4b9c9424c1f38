"""Reformer forward+backward against Hugging Face, reformer-pytorch and full attention.

    .venv/bin/python bench/reformer.py [--quick] [--lengths 4096,16384,...] [--hashes 4,2]
        [--tools hf,reformer-pytorch,full,genoformer,genoformer-kept2,genoformer-auto,genoformer-bf16]
        [--timeout 600]
        [--depths 2,6,12] [--depth-length 16384] [--max-rss-gb 20] [--json results.json]
        [--recipes-before 8c36586]

Every configuration runs in a fresh process (bench/_measure.py): batch 1, random token ids,
forward + backward of the mean square of every 6th hidden state, fp32 unless the tool name says
bf16 (CPU autocast, backward outside the autocast context). `genoformer` is the reversible stack
(memory-lean: `reversible=True`), `genoformer-kept2` the first four blocks reversible and the last two
keeping their activations (`reversible=4`: what "auto" runs when only two blocks' activations fit),
`genoformer-auto` the default `reversible="auto"` (activations kept and no recompute where they fit
in memory, as at these lengths on a large machine). Model: d_model 256, 4 heads of 64,
feed-forward 1024, depth 6, vocabulary 10, no dropout, chunk/bucket 64, n_hashes as given. Seconds are the best of up to three
steps (one step once a step takes 20 s or more); peak RSS is the whole child process's. The table is
printed twice: tokens/s on wall time, then on that step's CPU time (on a machine shared with other jobs,
run with --threads 1 and read the second).

Attention span: genoformer and Hugging Face look one chunk back and one ahead (encoder);
reformer-pytorch can only look one chunk back (no look-ahead option), so its span is narrower.
Peer length rules are satisfied by construction: Hugging Face trains only when the length is a
multiple of the chunk and equals the product of the axial position shape (set to two factors of L),
reformer-pytorch asserts L % (2 * bucket) == 0.

A peer is skipped at larger lengths once it failed or took more than --slow seconds, or when even
a linear extrapolation of its peak RSS passes --max-rss-gb; full attention also when its quadratic
time extrapolation passes --timeout. The main table's last columns give genoformer's tokens/s ratio
and peak-memory ratio to the faster Reformer peer at the same n_hashes and to full attention.
`--recipes-before REV` then prints bench/recipes.py's table: the recipes' own training tokens/s with
the code of git revision REV and with the working tree.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] == str(ROOT / "bench"):
    # run as a script: import from the repository root instead, so that bench/tokenizers.py cannot
    # shadow Hugging Face's `tokenizers` package and `bench.*` / `genoformer` import from the checkout
    sys.path[0] = str(ROOT)
from bench._measure import measure  # noqa: E402

D_MODEL, N_HEADS, D_FF, DEPTH, CHUNK, VOCAB = 256, 4, 1024, 6, 64, 10
# peers' feed-forward runs over pieces of this many tokens (their own chunking options)
FF_CHUNK_TOKENS = 4096
ALL_TOOLS = ("hf", "reformer-pytorch", "full", "genoformer", "genoformer-kept2", "genoformer-auto", "genoformer-bf16")
PEERS = ("hf", "reformer-pytorch")
LABELS = {"hf": "HF Reformer", "reformer-pytorch": "reformer-pytorch", "full": "full attention (SDPA)",
          "genoformer": "genoformer", "genoformer-kept2": "genoformer 2 blocks kept", "genoformer-auto": "genoformer auto",
          "genoformer-bf16": "genoformer bf16"}


# ----------------------------------------------------------------------------------------------
# Builders: run inside the child process; each returns (module, forward(ids) -> hidden, vocab).

def build_hf(length: int, *, n_hashes: int, depth: int = DEPTH):
    from transformers import ReformerConfig, ReformerModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # HF logs a warning when it picks num_buckets from the length
    rows = _largest_factor_up_to_sqrt(length)
    config = ReformerConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_attention_heads=N_HEADS, attention_head_size=D_MODEL // N_HEADS,
        feed_forward_size=D_FF, attn_layers=["lsh"] * depth, lsh_attn_chunk_length=CHUNK,
        lsh_num_chunks_before=1, lsh_num_chunks_after=1, num_hashes=n_hashes, num_buckets=None,
        axial_pos_embds=True, axial_pos_shape=(rows, length // rows), axial_pos_embds_dim=(64, D_MODEL - 64),
        max_position_embeddings=length, is_decoder=False, hidden_act="gelu", hidden_dropout_prob=0.0,
        lsh_attention_probs_dropout_prob=0.0, local_attention_probs_dropout_prob=0.0,
        # HF needs the length to be a multiple of its feed-forward chunk too
        chunk_size_feed_forward=math.gcd(length, FF_CHUNK_TOKENS), use_cache=False)
    model = ReformerModel(config)
    return model, lambda ids: model(input_ids=ids).last_hidden_state, VOCAB


def build_reformer_pytorch(length: int, *, n_hashes: int, depth: int = DEPTH):
    from reformer_pytorch import ReformerLM

    # no position flags: reformer-pytorch then applies rotary positions per layer (any length)
    model = ReformerLM(num_tokens=VOCAB, dim=D_MODEL, depth=depth, max_seq_len=length, heads=N_HEADS,
                       dim_head=D_MODEL // N_HEADS, bucket_size=CHUNK, n_hashes=n_hashes,
                       ff_chunks=max(1, length // FF_CHUNK_TOKENS), causal=False, lsh_dropout=0.0,
                       ff_dropout=0.0, ff_mult=D_FF // D_MODEL, return_embeddings=True)
    return model, model, VOCAB


def build_full(length: int, *, depth: int = DEPTH, **_):
    model = FullAttentionTransformer(VOCAB, D_MODEL, N_HEADS, D_FF, depth)
    return model, model, VOCAB


def build_genoformer(length: int, *, n_hashes: int, depth: int = DEPTH, **overrides):
    from genoformer.model import Reformer

    model = Reformer(genoformer_config(n_hashes, depth, **overrides))
    return model, model, VOCAB


def genoformer_config(n_hashes: int, depth: int = DEPTH, **overrides):
    """The benchmark configuration; `overrides` set other ReformerConfig fields (memory knobs, and
    `reversible`: the reversible stack unless overridden)."""
    from genoformer.model import ReformerConfig

    settings = dict(vocab_size=VOCAB, d_model=D_MODEL, n_heads=N_HEADS, depth=depth, d_ff=D_FF, attention="lsh",
                    chunk_size=CHUNK, n_hashes=n_hashes, dropout=0.0, reversible=True)
    return ReformerConfig(**{**settings, **overrides})


def _largest_factor_up_to_sqrt(n: int) -> int:
    """The largest divisor of n not above sqrt(n): the squarest axial shape HF accepts."""
    return max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)


class FullAttentionTransformer(nn.Module):
    """Reference: a plain pre-LN encoder with exact attention (scaled_dot_product_attention)."""

    def __init__(self, vocab: int, d_model: int, n_heads: int, d_ff: int, depth: int):
        super().__init__()
        self.n_heads = n_heads
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(_FullBlock(d_model, n_heads, d_ff) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + _sinusoid(ids.shape[1], self.embed.embedding_dim, self.embed.weight.device)
        for block in self.blocks:
            x = block(x, self.n_heads)
        return self.norm(x)


class _FullBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, n_heads: int) -> torch.Tensor:
        batch, length, d_model = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, n_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, length, head_dim)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, d_model))
        return x + self.ff(self.norm2(x))


def _sinusoid(length: int, d_model: int, device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, device=device) * (-math.log(10000.0) / d_model))
    angles = position * frequency  # (length, d_model / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


# ----------------------------------------------------------------------------------------------
# The benchmark driver: runs in the parent process.

def tool_spec(tool: str, n_hashes: int | None, depth: int = DEPTH) -> tuple[str, dict, bool]:
    """(builder, kwargs, bf16) for one table column."""
    builder = {"hf": "build_hf", "reformer-pytorch": "build_reformer_pytorch", "full": "build_full",
               "genoformer": "build_genoformer", "genoformer-kept2": "build_genoformer",
               "genoformer-auto": "build_genoformer", "genoformer-bf16": "build_genoformer"}[tool]
    kwargs = {"depth": depth} if tool == "full" else {"n_hashes": n_hashes, "depth": depth}
    if tool == "genoformer-auto":
        kwargs["reversible"] = "auto"
    if tool == "genoformer-kept2":
        kwargs["reversible"] = depth - 2
    return f"bench.reformer:{builder}", kwargs, tool == "genoformer-bf16"


def columns(tools: list[str], hashes: list[int]) -> list[tuple[str, int | None]]:
    return [(tool, None) if tool == "full" else (tool, h) for tool in tools
            for h in ([None] if tool == "full" else hashes)]


def column_label(tool: str, n_hashes: int | None) -> str:
    return LABELS[tool] if n_hashes is None else f"{LABELS[tool]}, {n_hashes} hashes"


def skip_reason(previous: dict | None, tool: str, length: int, args) -> str | None:
    """Why a column should not run at `length`, judged from its run at the previous length."""
    if previous is None:
        return None
    if previous["status"].startswith("skipped"):
        return previous["status"].removeprefix("skipped: ")
    at = f"{previous['length']:,}"
    if previous["status"] != "ok":
        return f"failed at {at}"
    if previous["seconds"] > args.slow:
        return f"took {previous['seconds']:.0f} s at {at}"
    growth = length / previous["length"]
    if previous["peak_rss_gb"] * growth > args.max_rss_gb:
        return f"≥ {previous['peak_rss_gb'] * growth:.0f} GB predicted (linear from {at})"
    if tool == "full" and previous["seconds"] * growth ** 2 > args.timeout:
        return f"≈ {previous['seconds'] * growth ** 2:.0f} s predicted (quadratic from {at})"
    return None


def run_one(tool: str, n_hashes: int | None, length: int, depth: int, args) -> dict:
    builder, kwargs, bf16 = tool_spec(tool, n_hashes, depth)
    record = measure(builder, length, kwargs=kwargs, bf16=bf16, timeout=args.timeout,
                     max_rss_gb=args.max_rss_gb, threads=args.threads)
    record.update(tool=tool, n_hashes=n_hashes, depth=depth)
    if record["status"] == "ok":  # on a shared machine wall time includes waiting for a core, CPU time does not
        record["cpu_tokens_per_s"] = length / record["cpu_seconds"]
    print(f"  {column_label(tool, n_hashes)}, depth {depth}, {length:,} tokens: {cell(record)}"
          + (f" (step CPU time {record['cpu_seconds']:.1f} s)" if record["status"] == "ok" else ""),
          file=sys.stderr, flush=True)
    return record


def cell(record: dict | None, *, short: bool = False, rate: str = "tokens_per_s") -> str:
    if record is None:
        return "—"
    if record["status"] != "ok":
        return record["status"][:70]
    if short:
        return f"{record['seconds']:.1f} s · {record['peak_rss_gb']:.2f} GB"
    seconds = record["seconds" if rate == "tokens_per_s" else "cpu_seconds"]
    return f"{seconds:.1f} s · {record[rate]:,.0f} tok/s · {record['peak_rss_gb']:.2f} GB"


def ratio_cell(mine: dict | None, peers: list[dict | None], full: dict | None, rate: str = "tokens_per_s") -> str:
    """genoformer's tokens/s (``rate``: on wall or CPU time) and peak-RSS ratios to the faster Reformer
    peer and to full attention."""
    if mine is None or mine["status"] != "ok":
        return "—"
    parts = []
    done = [p for p in peers if p is not None and p["status"] == "ok"]
    if done:
        fastest = max(done, key=lambda p: p[rate])
        parts.append(f"{mine[rate] / fastest[rate]:.2f}× tok/s, "
                     f"{mine['peak_rss_gb'] / fastest['peak_rss_gb']:.2f}× mem vs {LABELS[fastest['tool']]}")
    elif any(p is not None for p in peers):
        parts.append("Reformer peers failed or skipped")
    if full is not None and full["status"] == "ok":
        parts.append(f"{mine[rate] / full[rate]:.2f}× tok/s, "
                     f"{mine['peak_rss_gb'] / full['peak_rss_gb']:.2f}× mem vs full")
    return "; ".join(parts) or "—"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main_table(args, results: list[dict], rate: str = "tokens_per_s") -> str:
    cols = columns(args.tools, args.hashes)
    mine_cols = [(t, h) for t, h in cols if t.startswith("genoformer")]
    header = ["tokens"] + [column_label(t, h) for t, h in cols] + [f"{column_label(t, h)}: ratio" for t, h in mine_cols]
    rows = []
    for length in args.lengths:
        at = {(r["tool"], r["n_hashes"]): r for r in results if r["length"] == length and r["depth"] == DEPTH}
        row = [f"{length:,}"] + [cell(at.get(c), rate=rate) for c in cols]
        for tool, h in mine_cols:
            peers = [at.get((p, h)) for p in PEERS if p in args.tools]
            row.append(ratio_cell(at.get((tool, h)), peers, at.get(("full", None)), rate))
        rows.append(row)
    return markdown(header, rows)


def depth_table(args, results: list[dict]) -> str:
    h = args.hashes[0]
    cols = [(t, None if t == "full" else h) for t in args.tools]
    at = {(r["tool"], r["depth"]): r for r in results if r["length"] == args.depth_length
          and r["n_hashes"] in (h, None)}
    rows = [[str(depth)] + [cell(at.get((t, depth)), short=True) for t, _ in cols] for depth in args.depths]
    growth = []
    for tool, _ in cols:
        low, high = at.get((tool, min(args.depths))), at.get((tool, max(args.depths)))
        ok = low is not None and high is not None and low["status"] == high["status"] == "ok"
        growth.append(f"{high['peak_rss_gb'] / low['peak_rss_gb']:.2f}×" if ok else "—")
    rows.append([f"peak {max(args.depths)} ÷ {min(args.depths)}"] + growth)
    header = ["depth"] + [column_label(t, hh) for t, hh in cols]
    return markdown(header, rows)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def versions() -> str:
    names = ["torch", "transformers", "reformer-pytorch", "einops", "local-attention", "axial-positional-embedding",
             "product-key-memory"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--lengths", type=ints, default=[4096, 16384, 65536, 262144, 1048576])
    parser.add_argument("--quick", action="store_true", help="lengths 4,096 and 16,384 only")
    parser.add_argument("--hashes", type=ints, default=[4, 2])
    parser.add_argument("--tools", type=lambda t: t.split(","), default=list(ALL_TOOLS))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run before it is killed")
    parser.add_argument("--slow", type=float, default=300.0, help="skip a column's longer lengths after a run this slow")
    parser.add_argument("--max-rss-gb", type=float, default=None, help="kill a run above this RSS (default 90%% of RAM)")
    parser.add_argument("--depths", type=ints, default=[2, 6, 12], help="depth table (empty: skip it)")
    parser.add_argument("--depth-length", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's record here")
    parser.add_argument("--recipes-before", metavar="REV", help="then the recipes' tokens/s: REV against the working tree")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = [4096, 16384]
    unknown = set(args.tools) - set(ALL_TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(ALL_TOOLS)}")
    if args.max_rss_gb is None:
        import psutil

        args.max_rss_gb = 0.9 * psutil.virtual_memory().total / 1e9
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results: list[dict] = []
    last: dict = {}
    for length in args.lengths:
        for tool, h in columns(args.tools, args.hashes):
            reason = skip_reason(last.get((tool, h)), tool, length, args)
            if reason:
                record = {"tool": tool, "n_hashes": h, "depth": DEPTH, "length": length, "status": f"skipped: {reason}"}
            else:
                record = run_one(tool, h, length, DEPTH, args)
            results.append(record)
            last[(tool, h)] = record
    for depth in args.depths:
        for tool in args.tools:
            h = None if tool == "full" else args.hashes[0]
            done = any(r["tool"] == tool and r["n_hashes"] == h and r["length"] == args.depth_length
                       and r["depth"] == depth for r in results)
            if not done:
                results.append(run_one(tool, h, args.depth_length, depth, args))

    print(f"Reformer benchmark: d_model {D_MODEL}, {N_HEADS} heads, d_ff {D_FF}, depth {DEPTH}, batch 1, "
          f"chunk {CHUNK}, forward+backward, fp32 unless marked bf16; {cpu_name()}, "
          f"{torch.get_num_threads()} torch threads; {versions()}.\n"
          "Cells: seconds per step · tokens/s · peak RSS of the whole process. "
          "reformer-pytorch looks one chunk back only (cannot look ahead); HF and genoformer look one back and one ahead.\n")
    print(main_table(args, results))
    print("\nThe same on each step's CPU time (the process's own: what to read on a machine shared with other "
          "jobs, with --threads 1):\n")
    print(main_table(args, results, "cpu_tokens_per_s"))
    if args.depths:
        print(f"\nPeak RSS by depth at {args.depth_length:,} tokens, {args.hashes[0]} hashes:\n")
        print(depth_table(args, results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.recipes_before:
        from bench import recipes

        print(f"\nRecipes' training tokens/s, {args.recipes_before} against the working tree:\n", flush=True)
        recipes.main(["--before", args.recipes_before, "--threads", str(args.threads or 0)])


if __name__ == "__main__":
    main()
