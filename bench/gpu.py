"""GPU check: CUDA correctness against the CPU reference, the peer table, then long-window step timings.

    python bench/gpu.py                 # on a CUDA machine: correctness + 1 Mb, 4 Mb, 8 Mb steps (~5 min)
    python bench/gpu.py --peers --profile 1048576 --kernels chunked,flex --json out.json   # the whole check
    python bench/gpu.py --small         # anywhere: the same script at toy sizes on the CPU (a dry run)

Correctness: a small Reformer (LSH + local layers, 2 hash rounds) runs forward + backward on the
CPU in float64 and on the device in float32 and bf16 autocast, same weights and seed, once per attention
kernel (`--kernels`: the chunked kernel and FlexAttention); the script prints the largest relative
difference of the gradients (float32 should agree to ~1e-6, bf16 to ~3e-2). Without dropout: LSH
rotations are drawn on the CPU whatever the device, but dropout masks come from the device's own
generator (Philox on CUDA), so with dropout the two runs differ by design (0.15 with dropout 0.1,
measured).

Peers (`--peers`): forward + backward of bench/reformer.py's configuration (d_model 256, 4 heads, d_ff
1024, depth 6, 4 hash rounds, chunk 64, batch 1, loss on every 6th position) under bf16 autocast at
4,096 / 16,384 / 65,536 tokens: Hugging Face's Reformer, reformer-pytorch, full attention
(scaled_dot_product_attention: FlashAttention on this dtype), genoformer's reversible stack with each
kernel and with `reversible: auto`; the median of five steps after two warm-up steps (which include
FlexAttention's compilation), and peak device memory.

Timing: one warm-up and three measured training steps (forward, backward, AdamW) of the issue's model
(d_model 256, 4 heads, d_ff 1024, depth 6, single-nucleotide tokens, 2 hash rounds, batch 1, or
``--batch``) at each length and kernel, bf16 autocast; tokens/s, peak device memory and how many blocks ran
reversibly. `--sweep KEY=V1;V2` times each length once per value of one config field (e.g. ``reversible``),
`--kept` adds the memory a training forward leaves for backward. `--profile L`
prints where one L-token training step's time goes (torch.profiler: the operators by device time, and
how many kernels were launched). `--deadline S` skips whatever would start S seconds after the script
did (a lease is short).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] == str(ROOT / "bench"):  # run as a script: import genoformer and bench.* from the checkout
    sys.path[0] = str(ROOT)

from genoformer.model import ReformerConfig  # noqa: E402
from genoformer.model.networks import ReformerForMaskedLM  # noqa: E402

STARTED = time.perf_counter()
PEER_LENGTHS = (4096, 16384, 65536)
PEER_TOOLS = ("hf", "reformer-pytorch", "full", "genoformer", "genoformer-flex", "genoformer-flex-auto")


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() - STARTED > deadline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else float("nan")


def _kernel_fields(kernel: str) -> dict:
    """ReformerConfig fields of one --kernels entry ("default": set none, e.g. for an older checkout)."""
    return {} if kernel == "default" else {"attention_kernel": kernel}


def _step(network, ids, optimizer, device, bf16: bool) -> torch.Tensor:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = network(ids)
        picked = hidden[:, ::7]
        loss = torch.nn.functional.cross_entropy(network.lm_head(picked).flatten(0, 1).float(), ids[:, ::7].flatten())
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


def correctness(device: torch.device, length: int, kernel: str) -> dict:
    config = ReformerConfig(vocab_size=10, d_model=64, n_heads=4, depth=4, d_ff=128, attention=["local", "lsh"],
                            chunk_size=32, n_hashes=2)
    torch.manual_seed(0)
    reference = ReformerForMaskedLM(config).double()
    ids = torch.randint(5, 10, (2, length))
    _step(reference, ids, None, torch.device("cpu"), bf16=False)
    out = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        fields = {**config.to_dict(), **_kernel_fields(kernel)}
        network = ReformerForMaskedLM(ReformerConfig(**fields)).to(device)
        network.load_state_dict({k: v.float() for k, v in reference.state_dict().items()})
        _step(network, ids.to(device), None, device, bf16)
        worst = 0.0
        for (key, p_ref), p_dev in zip(reference.named_parameters(), network.parameters()):
            ref, dev = p_ref.grad, p_dev.grad.double().cpu()
            worst = max(worst, float((dev - ref).norm() / ref.norm().clamp_min(1e-12)))
        out[name] = worst
        print(f"correctness {kernel:8s} {name:8s}: largest relative gradient difference vs CPU float64 = {worst:.2e}",
              flush=True)
    return out


def _issue_config(small: bool, fields: dict) -> ReformerConfig:
    """The timed model (issue 7's: d_model 256, depth 6, 2 hash rounds; toy sizes with --small)."""
    return ReformerConfig(**{**dict(vocab_size=10, d_model=64 if small else 256, n_heads=4, depth=2 if small else 6,
                                    d_ff=128 if small else 1024, attention="lsh", chunk_size=64, n_hashes=2),
                             **fields})


def _kept_gib(network, ids, device) -> float:
    """Device memory a training forward leaves allocated for backward (and its output), in GiB: what the
    blocks that keep their activations hold, beside the reversible stack's two streams."""
    _sync(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with torch.autocast(device.type, dtype=torch.bfloat16):
        hidden = network(ids)
    _sync(device)
    kept = (torch.cuda.memory_allocated(device) - before) / 1024**3 if device.type == "cuda" else float("nan")
    del hidden
    return kept


def timing(device: torch.device, lengths: list[int], small: bool, batch: int = 1, deadline: float | None = None,
           kept: bool = False, **fields) -> list[dict]:
    config = _issue_config(small, fields)
    rows = []
    for length in lengths:
        if _late(deadline):
            rows.append({"length": length, "failed": "skipped: deadline"})
            continue
        network = ReformerForMaskedLM(config).to(device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
        ids = torch.randint(5, 10, (batch, length), device=device)
        try:
            _reset_peak(device)
            _step(network, ids, optimizer, device, bf16=True)  # warm-up
            _sync(device)
            started = time.perf_counter()
            for _ in range(3):
                _step(network, ids, optimizer, device, bf16=True)
            _sync(device)
            seconds = (time.perf_counter() - started) / 3
            with torch.autocast(device.type, dtype=torch.bfloat16):  # what auto chooses for this step's size
                reversible = network.encoder._reversible_blocks(ids.numel(), device)
            row = {"length": length, "batch": batch, "seconds": seconds, "tokens_per_s": batch * length / seconds,
                   "peak_gib": _peak_gib(device), "reversible_blocks": reversible}
            if kept:
                row["kept_gib"] = _kept_gib(network, ids, device)
        except torch.OutOfMemoryError as exc:
            row = {"length": length, "failed": f"out of memory ({str(exc).splitlines()[0]})"}
        row["fields"] = fields
        rows.append(row)
        print(json.dumps(row), flush=True)
        del network, optimizer, ids
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def profile(device: torch.device, length: int, small: bool, **fields) -> str:
    """The operators of one training step by device (or CPU) time, and the number of kernels launched."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    config = _issue_config(small, fields)
    network = ReformerForMaskedLM(config).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    ids = torch.randint(5, 10, (1, length), device=device)
    _step(network, ids, optimizer, device, bf16=True)
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        _step(network, ids, optimizer, device, bf16=True)
        _sync(device)
    events = prof.key_averages()
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    table = events.table(sort_by=sort, row_limit=25, max_name_column_width=60)
    return f"profile of one {length:,}-token training step ({fields or 'defaults'}): {launches} kernel launches\n{table}"


def peers(device: torch.device, lengths: list[int], tools: list[str], deadline: float | None, n_hashes: int = 4) -> list[dict]:
    """Forward + backward of bench/reformer.py's configuration for each tool and length (bf16 autocast)."""
    from bench import reformer

    builders = {"hf": (reformer.build_hf, {}), "reformer-pytorch": (reformer.build_reformer_pytorch, {}),
                "full": (reformer.build_full, {}), "genoformer": (reformer.build_genoformer, {"attention_kernel": "chunked"}),
                "genoformer-flex": (reformer.build_genoformer, {"attention_kernel": "flex"}),
                "genoformer-flex-auto": (reformer.build_genoformer, {"attention_kernel": "flex", "reversible": "auto"})}
    rows = []
    for length in lengths:
        for tool in tools:
            row = {"tool": tool, "length": length}
            if _late(deadline):
                rows.append({**row, "failed": "skipped: deadline"})
                continue
            build, extra = builders[tool]
            try:
                torch.manual_seed(0)
                model, forward, vocab = build(length, n_hashes=n_hashes, **extra)
                model.to(device).train()
                ids = torch.randint(0, vocab, (1, length), device=device)
                _reset_peak(device)
                times = []
                for i in range(7):
                    _sync(device)
                    started = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        picked = forward(ids)[:, ::6].float()
                    picked.square().mean().backward()
                    model.zero_grad(set_to_none=True)
                    _sync(device)
                    if i >= 2:
                        times.append(time.perf_counter() - started)
                seconds = statistics.median(times)
                row.update(seconds=seconds, tokens_per_s=length / seconds,
                           peak_gib=_peak_gib(device))
            except Exception as error:  # noqa: BLE001 - any failure becomes a table cell
                row["failed"] = f"{type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''}"
            rows.append(row)
            print(json.dumps(row), flush=True)
            model = forward = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def peer_table(rows: list[dict]) -> str:
    lengths = sorted({r["length"] for r in rows})
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    cell = {(r["tool"], r["length"]): r for r in rows}
    lines = ["| tool | " + " | ".join(f"{n:,} tokens" for n in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for tool in tools:
        parts = []
        for n in lengths:
            r = cell.get((tool, n))
            if r is None or "failed" in r:
                parts.append("—" if r is None else r["failed"][:40])
                continue
            text = f"{r['seconds'] * 1000:.0f} ms · {r['tokens_per_s']:,.0f} tok/s · {r['peak_gib']:.2f} GiB"
            peers_done = [cell[(p, n)] for p in ("hf", "reformer-pytorch") if "failed" not in cell.get((p, n), {"failed": 1})]
            if tool.startswith("genoformer") and peers_done:
                best = max(peers_done, key=lambda p: p["tokens_per_s"])
                text += f" · {r['tokens_per_s'] / best['tokens_per_s']:.2f}x / {r['peak_gib'] / best['peak_gib']:.2f}x mem of {best['tool']}"
            parts.append(text)
        lines.append(f"| {tool} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="toy sizes on whatever device (a dry run)")
    parser.add_argument("--lengths", type=int, nargs="*", default=None,
                        help="training-step lengths to time (none after the flag: time none)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--kernels", default="auto",
                        help="comma-separated attention kernels to check and time: auto, chunked, flex, or default "
                             "(set no kernel field: an older checkout)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="ReformerConfig field of the timed model (JSON value), e.g. --set n_heads=8")
    parser.add_argument("--sweep", default=None, metavar="KEY=V1;V2;...",
                        help="time each length once per value of one field (JSON values), e.g. "
                             "'reversible=true;4;2;false;\"auto\"'")
    parser.add_argument("--kept", action="store_true",
                        help="also measure what a training forward leaves allocated for backward (kept_gib)")
    parser.add_argument("--peers", action="store_true", help="the peer table at 4k / 16k / 64k tokens first")
    parser.add_argument("--peer-tools", default=",".join(PEER_TOOLS))
    parser.add_argument("--profile", type=int, default=None, metavar="LENGTH")
    parser.add_argument("--deadline", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-correctness", action="store_true")
    args = parser.parse_args()
    fields = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    swept = [{}]
    if args.sweep:
        key, sep, values = args.sweep.partition("=")
        if not sep or not key:
            parser.error(f"--sweep {args.sweep!r}: expected KEY=V1;V2;...")
        try:
            swept = [{key: json.loads(value)} for value in values.split(";")]
        except json.JSONDecodeError as error:
            parser.error(f"--sweep {args.sweep!r}: each value must be JSON ({error})")
    kernels = args.kernels.split(",")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.small:
        parser.error("no CUDA device: run with --small for a dry run on the CPU")
    lengths = args.lengths if args.lengths is not None else ([4096, 16384] if args.small else [1 << 20, 1 << 22, 1 << 23])
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    result = {"device": str(device), "fields": fields, "correctness": {}, "timing": [], "peers": [], "profile": None}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    if not args.no_correctness:
        for kernel in kernels:
            try:
                result["correctness"][kernel] = correctness(device, 256 if args.small else 1024, kernel)
            except Exception as error:  # noqa: BLE001 - e.g. flex on a CPU dry run
                result["correctness"][kernel] = f"{type(error).__name__}: {error}"
                print(f"correctness {kernel}: {result['correctness'][kernel]}", flush=True)
        save()
    if args.peers:
        result["peers"] = peers(device, [1024, 2048] if args.small else list(PEER_LENGTHS),
                                args.peer_tools.split(","), args.deadline)
        save()
    if args.profile:
        result["profile"] = profile(device, args.profile, args.small, **fields)
        print(result["profile"], flush=True)
        save()
    for length in lengths:  # each length with every kernel before the next length (a deadline cuts the longest)
        for kernel in kernels:
            for variant in swept:
                try:
                    result["timing"] += timing(device, [length], args.small, args.batch, args.deadline, args.kept,
                                               **{**fields, **_kernel_fields(kernel), **variant})
                except Exception as error:  # noqa: BLE001
                    print(f"timing {kernel} {variant} at {length:,}: {type(error).__name__}: {error}", flush=True)
                save()
    if result["peers"]:
        print(peer_table(result["peers"]))
    if result["timing"]:
        print("| kernel | reversible blocks | tokens | s/step | tokens/s | peak GiB | kept GiB |\n|---|---|---|---|---|---|---|")
    for row in result["timing"]:
        kernel = row["fields"].get("attention_kernel", "default") if "fields" in row else "?"
        blocks = row.get("reversible_blocks", row.get("fields", {}).get("reversible", ""))
        if "failed" in row:
            print(f"| {kernel} | {blocks} | {args.batch} x {row['length']:,} | {row['failed']} | | | |")
        else:
            print(f"| {kernel} | {blocks} | {args.batch} x {row['length']:,} | {row['seconds']:.2f} | "
                  f"{row['tokens_per_s']:,.0f} | {row['peak_gib']:.1f} | {row.get('kept_gib', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
