"""Adversarial training on several processes with PyTorch's own DistributedDataParallel.

:func:`~labkit.hardening.adversarial_training` needs no change to run data-parallel: start it
under ``torchrun`` with a process group initialised, and it splits every batch across the
processes and lets DDP average the gradients. This module is a ready-made entry point::

    torchrun --nproc_per_node 2 -m labkit.hardening.distributed --out robust.pt \\
        --recipe pgd --dataset digits --epochs 10 --eps 0.1

On CPUs it uses the ``gloo`` backend, on GPUs ``nccl`` with one GPU per process (the process's
``LOCAL_RANK``). Rank 0 writes the trained weights and a JSON history next to them. The same
command with ``--nproc_per_node 1``, or plain ``python -m labkit.hardening.distributed``,
trains on one process.

:func:`init_process_group` and :func:`destroy_process_group` are the two calls to put around
your own training script.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch import distributed as dist

__all__ = ["destroy_process_group", "init_process_group", "main"]


def init_process_group() -> tuple[int, int, torch.device]:
    """Join the process group ``torchrun`` describes in the environment; ``(rank, world, device)``.

    Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) nothing is initialised and the
    result is ``(0, 1, device)``. The backend is ``nccl`` when CUDA is available, else ``gloo``;
    on CUDA each process takes the GPU of its ``LOCAL_RANK``.
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; train on one process instead")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def destroy_process_group() -> None:
    """Leave the process group, if one was joined, once every process has reached this point.

    The barrier keeps a fast rank from tearing down its communication threads while a slow one
    (rank 0, writing the weights) still talks to it, which can abort the process at exit.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.hardening.distributed",
        description="Adversarial training on one or several processes (start it with torchrun).",
    )
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 writes the weights (.pt)")
    parser.add_argument("--recipe", choices=["pgd", "fgsm-rs", "trades", "fgsm"], default="pgd")
    parser.add_argument("--dataset", default="digits", help="a labkit data set (default digits)")
    parser.add_argument("--model", default=None, help="zoo recipe to build (default <dataset>-cnn)")
    parser.add_argument("--examples", type=int, default=None, help="training examples (default: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, split across processes")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--monitor-size", type=int, default=256)
    parser.add_argument(
        "--mlp", action="store_true", help="a small MLP without dropout or batch norm instead of the CNN"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the command line says; rank 0 saves ``--out`` and ``--out`` with ``.json``."""
    import labkit as lk
    from labkit.hardening import training

    args = _parser().parse_args(argv)
    rank, world, device = init_process_group()
    try:
        torch.manual_seed(args.seed)  # the same initial weights on every process
        data = lk.data.load(args.dataset, split="train", n=args.examples)
        if args.mlp:
            net = torch.nn.Sequential(
                torch.nn.Flatten(),
                torch.nn.Linear(int(torch.tensor(data.x.shape[1:]).prod()), 64),
                torch.nn.ReLU(),
                torch.nn.Linear(64, data.num_classes),
            )
            model = lk.LabModel(net, input_shape=data.input_shape, num_classes=data.num_classes)
        else:
            model = lk.models.build(args.model or f"{args.dataset}-cnn", data)
        model = model.to(device)
        gen = torch.Generator().manual_seed(args.seed)
        attacks = {
            "pgd": partial(training.pgd_train_attack, eps=args.eps, steps=5, generator=gen),
            "fgsm-rs": partial(training.fgsm_rs_attack, eps=args.eps, generator=gen),
            "trades": partial(training.trades_attack, eps=args.eps, steps=5, generator=gen),
            "fgsm": partial(training.fgsm_rs_attack, eps=args.eps, step_size=args.eps, random_start=False),
        }
        history = training.adversarial_training(
            model,
            data,
            attack=attacks[args.recipe],
            loss="trades" if args.recipe == "trades" else "ce",
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            monitor_size=args.monitor_size,
            overfit_drop=None,
            generator=gen,
            progress=rank == 0,
        )
        if rank == 0:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.out)
            summary = {"world_size": world, "train_seconds": history.train_seconds, "rows": history.rows}
            args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    finally:
        destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
