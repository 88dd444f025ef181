"""The C-MCR training step against a plain PyTorch step of the same math, side by side in one process.

Both take the same global batch: native pairs, the pseudo pairs' anchors and the pseudo pairs (the rows C-MCR puts
through each head together, so BatchNorm sees them all), ``batch_size`` rows each; perturb them, run paper-size
heads (512-1024-512, BatchNorm) on both sides, the two InfoNCE losses and the intra-space attraction, backward
and AdamW. The pseudo rows are precomputed for both, so the memory retrieval is not part of either step. The plain
step is what one would write by hand in float32; the project's step is ``TrainingRun.train_step`` as
``fit_heads`` runs it (loss check and learning-rate schedule included), in each precision asked for.

    python benchmarks/scripts/train_step.py --json runs/train-step.json                 # CPU, batch 4096
    python benchmarks/scripts/train_step.py --device cuda --batch-size 16384          # the GPU target

Targets: on CPU the project's step >= 1.3x the plain one; on an H100/H200 at batch 16,384 >= 3x.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from spacegraph_bridges.cmcr import CMCRConfig, PseudoPairs, TrainingRun
from torch import nn

import spacegraph as sg

TEMPERATURE, NOISE, INTRA_WEIGHT = 0.05, 0.05, 0.1


def unit(n: int, dim: int, seed: int, device: str) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1).to(device)


def plain_head(dim: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.BatchNorm1d(dim)
    )


class PlainStep:
    """The same math written plainly: float32, no autocast, no compile."""

    def __init__(self, rows: dict[str, torch.Tensor], dim: int, hidden: int, device: str) -> None:
        self.rows = rows
        self.heads = nn.ModuleList([plain_head(dim, hidden), plain_head(dim, hidden)]).to(device)
        self.optimizer = torch.optim.AdamW(self.heads.parameters(), lr=1e-3, weight_decay=1e-4)

    def __call__(self, native: torch.Tensor, pseudo: torch.Tensor) -> float:
        r = self.rows
        sides = [torch.cat([r[f"b{s}"][native], r[f"a{s}"][pseudo], r[f"p{s}"][pseudo]]) for s in "xy"]
        zx, zy = (
            F.normalize(head(F.normalize(x + NOISE * torch.randn_like(x), dim=1)), dim=1).chunk(3)
            for head, x in zip(self.heads, sides)
        )
        target = torch.arange(len(native), device=native.device)

        def info_nce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            logits = a @ b.T / TEMPERATURE
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

        inter = info_nce(zx[0], zy[0]) + info_nce(zx[2], zy[2])
        intra = (zx[2] - zx[1]).pow(2).sum(1).mean() + (zy[2] - zy[1]).pow(2).sum(1).mean()
        loss = inter + INTRA_WEIGHT * intra
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def project_step(rows: dict[str, torch.Tensor], args: argparse.Namespace, precision: str, compile: bool) -> TrainingRun:
    """The project's training run, given the same precomputed pseudo rows (drawn after the native rows)."""
    features = sg.BridgeFeatures(rows["bx"], rows["by"])
    config = CMCRConfig(
        steps=10_000,
        batch_size=args.batch_size,
        use_memory=False,
        val_fraction=0.0,
        device=args.device,
        precision=precision,
        compile=compile,
    )
    run = TrainingRun.start(features, config)
    run.pseudo = PseudoPairs(run.data, (rows["px"], rows["py"], rows["ax"], rows["ay"]), None, aligned=False)
    run.step.model.train()
    return run


def timed(step, batches: list[tuple[torch.Tensor, torch.Tensor]], device: str) -> float:
    """Seconds per step over ``batches`` after two warm-up steps."""
    for batch in batches[:2]:
        step(*batch)
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    start = time.perf_counter()
    for batch in batches[2:]:
        step(*batch)
    sync()
    return (time.perf_counter() - start) / (len(batches) - 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=32_768, help="overlap and pseudo rows to draw batches from")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="also time the compiled project step")
    parser.add_argument("--json", default="runs/train-step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dim, hidden, n, b = 512, 1024, args.rows, args.batch_size
    rows = {
        f"{part}{side}": unit(n, dim, seed, args.device)
        for seed, (part, side) in enumerate((p, s) for p in "bap" for s in "xy")
    }
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randperm(n, generator=generator)[:b].to(args.device),
            torch.randperm(n, generator=generator)[:b].to(args.device),
        )
        for _ in range(args.steps + 2)
    ]
    seconds = {"plain_fp32": timed(PlainStep(rows, dim, hidden, args.device), batches, args.device)}
    variants = [(p, False) for p in args.precisions] + ([("bf16", True)] if args.compile else [])
    for precision, compiled in variants:
        run = project_step(rows, args, precision, compiled)

        def step(native: torch.Tensor, pseudo: torch.Tensor, run: TrainingRun = run) -> None:
            run.batches = iter([(native, pseudo + n)])  # the pseudo rows sit after the native ones
            run.train_step(0)

        seconds[f"project_{precision}{'_compiled' if compiled else ''}"] = timed(step, batches, args.device)
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "batch_size": b,
        "heads": "512-1024-512 (BatchNorm) x2, three parts of batch_size rows each",
        "samples_per_s": {name: round(b / s) for name, s in seconds.items()},
        "speedup_vs_plain": {name: round(seconds["plain_fp32"] / s, 2) for name, s in seconds.items()},
    }
    print(json.dumps(result, indent=2))
    from spacegraph._atomic import write_text_atomic

    write_text_atomic(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
