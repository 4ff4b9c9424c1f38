"""GPU check: CUDA correctness against the CPU reference, then long-window training-step timings.

    python bench/gpu.py                 # on a CUDA machine: correctness + 1 Mb, 4 Mb, 8 Mb steps (~5 min)
    python bench/gpu.py --small         # anywhere: the same script at toy sizes on the CPU (a dry run)

Correctness: a small Reformer (LSH + local layers, 2 hash rounds) runs forward + backward on the
CPU in float64 and on the device in float32 and bf16 autocast, same weights and seed; the script
prints the largest relative difference of the gradients (float32 should agree to ~1e-4, bf16 to
~1e-2). Without dropout: LSH rotations are drawn on the CPU whatever the device, but dropout masks
come from the device's own generator (Philox on CUDA), so with dropout the two runs differ by design
(0.15 with dropout 0.1, measured). Timing: one warm-up and three measured training steps (forward, backward,
AdamW) of the issue's model (d_model 256, 4 heads, d_ff 1024, depth 6, single-nucleotide tokens,
batch 1, or ``--batch``) at each length, bf16 autocast; tokens/s and peak device memory.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from genoformer.model import ReformerConfig
from genoformer.model.networks import ReformerForMaskedLM


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


def correctness(device: torch.device, length: int) -> dict:
    config = ReformerConfig(vocab_size=10, d_model=64, n_heads=4, depth=4, d_ff=128, attention=["local", "lsh"],
                            chunk_size=32, n_hashes=2)
    torch.manual_seed(0)
    reference = ReformerForMaskedLM(config).double()
    ids = torch.randint(5, 10, (2, length))
    _step(reference, ids, None, torch.device("cpu"), bf16=False)
    out = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        network = ReformerForMaskedLM(config).to(device)
        network.load_state_dict({k: v.float() for k, v in reference.state_dict().items()})
        _step(network, ids.to(device), None, device, bf16)
        worst = 0.0
        for (key, p_ref), p_dev in zip(reference.named_parameters(), network.parameters()):
            ref, dev = p_ref.grad, p_dev.grad.double().cpu()
            worst = max(worst, float((dev - ref).norm() / ref.norm().clamp_min(1e-12)))
        out[name] = worst
        print(f"correctness {name:8s}: largest relative gradient difference vs CPU float64 = {worst:.2e}", flush=True)
    return out


def timing(device: torch.device, lengths: list[int], small: bool, batch: int = 1, **fields) -> list[dict]:
    config = ReformerConfig(**{**dict(vocab_size=10, d_model=64 if small else 256, n_heads=4, depth=2 if small else 6,
                                      d_ff=128 if small else 1024, attention="lsh", chunk_size=64, n_hashes=2),
                               **fields})
    rows = []
    for length in lengths:
        network = ReformerForMaskedLM(config).to(device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
        ids = torch.randint(5, 10, (batch, length), device=device, pin_memory=False)
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _step(network, ids, optimizer, device, bf16=True)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for _ in range(3):
                _step(network, ids, optimizer, device, bf16=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - started) / 3
            peak = torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else float("nan")
            row = {"length": length, "batch": batch, "seconds": seconds, "tokens_per_s": batch * length / seconds,
                   "peak_gib": peak}
        except torch.OutOfMemoryError as exc:
            row = {"length": length, "failed": f"out of memory ({str(exc).splitlines()[0]})"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del network, optimizer, ids
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="toy sizes on whatever device (a dry run)")
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="ReformerConfig field of the timed model (JSON value), e.g. --set n_heads=8")
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-correctness", action="store_true")
    args = parser.parse_args()
    fields = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.small:
        parser.error("no CUDA device: run with --small for a dry run on the CPU")
    lengths = args.lengths or ([4096, 16384] if args.small else [1 << 20, 1 << 22, 1 << 23])
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    result = {"device": str(device),
              "correctness": None if args.no_correctness else correctness(device, 256 if args.small else 1024),
              "timing": timing(device, lengths, args.small, args.batch, **fields), "fields": fields}
    print("| tokens | s/step | tokens/s | peak GiB |\n|---|---|---|---|")
    for row in result["timing"]:
        if "failed" in row:
            print(f"| {args.batch} x {row['length']:,} | {row['failed']} | | |")
        else:
            print(f"| {args.batch} x {row['length']:,} | {row['seconds']:.2f} | {row['tokens_per_s']:,.0f} "
                  f"| {row['peak_gib']:.1f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
