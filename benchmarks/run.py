"""Benchmarks, each compared against a peer in the same run.

    python benchmarks/run.py            # everything, one table
    python benchmarks/run.py --repeat 5

training: ``labkit.models.train`` (contract checks, progress bar, one-cycle schedule) against a
plain PyTorch loop over the same model and data: the overhead of the library's conveniences.
signs: generating the procedural traffic signs against decoding the same number of PNG images
with PIL (what loading a folder of real 32x32 images would cost).
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

import labkit as lk


def _time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def bench_training(repeat: int) -> tuple[str, float, str, float, str]:
    data = lk.data.load("digits", split="train")

    def labkit_epoch() -> None:
        torch.manual_seed(0)
        model = lk.models.build("digits-cnn", data)
        lk.models.train(model, data, epochs=1, progress=False)

    def plain_epoch() -> None:
        torch.manual_seed(0)
        model = lk.models.build("digits-cnn", data)
        net, mean, std = model.net, model.mean, model.std
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        order = torch.randperm(len(data))
        for i in range(0, len(data), 128):
            idx = order[i : i + 128]
            loss = F.cross_entropy(net((data.x[idx] - mean) / std), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    ours, peer = _time(labkit_epoch, repeat), _time(plain_epoch, repeat)
    n = len(data)
    return "train 1 epoch, digits-cnn", n / ours, "plain PyTorch loop", n / peer, "images/s"


def bench_signs(repeat: int) -> tuple[str, float, str, float, str]:
    from PIL import Image

    n = 2000
    imgs = lk.data.load("signs", split="train", n=n)
    blobs = []
    for img in imgs.x:
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(buf, format="PNG")
        blobs.append(buf.getvalue())

    def generate() -> None:
        lk.data.load("signs", split="train", n=n, seed=1)

    def decode() -> None:
        import numpy as np

        arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
        torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)

    ours, peer = _time(generate, repeat), _time(decode, repeat)
    return f"generate {n} signs", n / ours, f"decode {n} PNGs with PIL", n / peer, "images/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = f"| {'labkit':<28} | {'rate':>10} | {'peer':<26} | {'rate':>10} | {'ratio':>6} | unit |"
    print(header)
    print("|" + "---|" * 6)
    for bench in (bench_training, bench_signs):
        name, ours, peer_name, peer, unit = bench(args.repeat)
        ratio = ours / peer
        print(f"| {name:<28} | {ours:>10.0f} | {peer_name:<26} | {peer:>10.0f} | {ratio:>5.2f}x | {unit} |")
    print("ratio > 1 means labkit is faster")


if __name__ == "__main__":
    main()
