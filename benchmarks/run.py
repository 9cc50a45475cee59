"""Benchmarks, each compared against a peer in the same run.

    python benchmarks/run.py            # everything, one table (a few minutes on 2 CPU cores)
    python benchmarks/run.py --quick    # tiny sizes, one repeat: a smoke run
    python benchmarks/run.py --repeat 5 --n-train 4000

Every row times labkit and a peer alternately (one warm-up each, then the median of
``--repeat`` runs, so that load drifts hit both) and prints both rates and their ratio; ratio
> 1 means labkit is faster.

training: one epoch of ``labkit.models.train`` (contract checks, progress bar, one-cycle
schedule) against a plain PyTorch loop over the same model and data.
PGD-AT / FGSM-RS: one epoch of ``labkit.hardening.pgd_at`` (5 PGD steps per batch) and
``labkit.hardening.fast_at`` (FGSM from a random start), monitor batch off, against a plain
PyTorch loop that crafts the same attack and takes the same Adam step. All on ``signs-cnn``.
corruptions: ``labkit.stress.corruption_benchmark`` on Gaussian noise, Gaussian blur and JPEG
(severity 3, batched tensors) against the same corruptions applied image by image with NumPy
and PIL, each followed by the model's accuracy on the corrupted images.
certify: ``labkit.eval.certify`` (randomized smoothing, samples batched across inputs) against
a loop over inputs as in Cohen et al.'s reference code, in noisy samples per second.
signs: generating the procedural traffic signs against decoding the same number of PNG images
with PIL (what loading a folder of real 32x32 images would cost).
transactions: generating the synthetic fraud table against parsing the same rows from CSV text
with NumPy (what loading a real export would cost).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

import labkit as lk

EPS = 8 / 255


@dataclass
class Row:
    name: str
    ours: float
    peer_name: str
    peer: float
    unit: str

    @property
    def ratio(self) -> float:
        return self.ours / self.peer


def _time_pair(ours: Callable[[], object], peer: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds of each after one warm-up, alternating the two."""
    ours(), peer()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        for fn, runs in ((ours, a), (peer, b)):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def _fresh(data: lk.data.LabData, seed: int = 0) -> lk.LabModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return lk.models.build("signs-cnn", data)


# --------------------------------------------------------------------------------------------
# Training: standard, PGD-AT, FGSM-RS
# --------------------------------------------------------------------------------------------


def _plain_epoch(
    data: lk.data.LabData,
    *,
    lr: float,
    weight_decay: float,
    attack_steps: int,
    alpha: float,
    batch: int = 128,
) -> None:
    """One epoch written out in plain PyTorch; ``attack_steps=0`` is standard training."""
    model = _fresh(data)
    net, mean, std = model.net, model.mean, model.std
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=math.ceil(len(data) / batch), pct_start=0.25
    )
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=gen)
    for i in range(0, len(data), batch):
        idx = order[i : i + batch]
        x, y = data.x[idx], data.y[idx]
        if attack_steps:
            net.eval()
            delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS
            x_adv = (x + delta).clamp(0, 1)
            for _ in range(attack_steps):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(net((x_adv - mean) / std), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = x_adv.detach() + alpha * grad.sign()
                x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
            x = x_adv.detach()
        net.train()
        loss = F.cross_entropy(net((x - mean) / std), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()


def bench_training(n: int, repeat: int) -> list[Row]:
    data = lk.data.load("signs", split="train", n=n)
    H = lk.hardening
    steps = 5
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "train 1 epoch",
            lambda: lk.models.train(_fresh(data), data, epochs=1, progress=False),
            lambda: _plain_epoch(data, lr=1e-3, weight_decay=0.0, attack_steps=0, alpha=0.0),
        ),
        (
            f"PGD-AT 1 epoch ({steps} steps)",
            lambda: H.pgd_at(
                _fresh(data), data, eps=EPS, epochs=1, steps=steps, monitor_size=0, progress=False
            ),
            lambda: _plain_epoch(
                data, lr=2e-3, weight_decay=5e-4, attack_steps=steps, alpha=2.5 * EPS / steps
            ),
        ),
        (
            "FGSM-RS 1 epoch",
            lambda: H.fast_at(_fresh(data), data, eps=EPS, epochs=1, monitor_size=0, progress=False),
            lambda: _plain_epoch(data, lr=2e-3, weight_decay=5e-4, attack_steps=1, alpha=1.25 * EPS),
        ),
    ]
    rows = []
    for name, ours, peer in cases:
        t_ours, t_peer = _time_pair(ours, peer, repeat)
        rows.append(Row(f"{name}, signs-cnn", n / t_ours, "plain PyTorch loop", n / t_peer, "images/s"))
    return rows


# --------------------------------------------------------------------------------------------
# Corruptions
# --------------------------------------------------------------------------------------------

SEVERITY = 3
_SIGMA_NOISE = lk.stress.CORRUPTIONS["gaussian_noise"].levels[SEVERITY - 1]
_SIGMA_BLUR = lk.stress.CORRUPTIONS["gaussian_blur"].levels[SEVERITY - 1]
_QUALITY = int(lk.stress.CORRUPTIONS["jpeg"].levels[SEVERITY - 1])


def _pil_corrupt(img: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """One HxWxC float image in [0, 1], corrupted with NumPy or PIL."""
    from PIL import Image, ImageFilter

    if name == "gaussian_noise":
        return np.clip(img + rng.normal(0.0, _SIGMA_NOISE, img.shape), 0, 1)
    pil = Image.fromarray((img * 255).round().astype(np.uint8))
    if name == "gaussian_blur":
        out = pil.filter(ImageFilter.GaussianBlur(radius=_SIGMA_BLUR))
    else:  # jpeg
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=_QUALITY)
        out = Image.open(io.BytesIO(buf.getvalue()))
    return np.asarray(out, dtype=np.float32) / 255


def bench_corruptions(n: int, repeat: int) -> list[Row]:
    data = lk.data.load("signs", split="test", n=n)
    model = _fresh(data).eval()
    names = ["gaussian_noise", "gaussian_blur", "jpeg"]

    def ours() -> None:
        lk.stress.corruption_benchmark(
            model,
            data,
            corruptions=names,
            severities=(SEVERITY,),
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )

    images = data.x.permute(0, 2, 3, 1).numpy()

    def peer() -> None:
        rng = np.random.default_rng(0)
        for name in names:
            out = np.stack([_pil_corrupt(img, name, rng) for img in images]).astype(np.float32)
            x = torch.from_numpy(out).permute(0, 3, 1, 2)
            with torch.no_grad(), model.unchecked():
                (model(x).argmax(1) == data.y).float().mean()

    t_ours, t_peer = _time_pair(ours, peer, repeat)
    total = n * len(names)
    return [
        Row(
            "corruption_benchmark (3 kinds)",
            total / t_ours,
            "per image, NumPy + PIL",
            total / t_peer,
            "images/s",
        )
    ]


# --------------------------------------------------------------------------------------------
# Randomized smoothing
# --------------------------------------------------------------------------------------------


def _plain_certify(
    model: torch.nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float, batch: int
) -> list[tuple[int, float]]:
    """Cohen et al.'s CERTIFY, one input at a time (their reference code's structure)."""
    from scipy.stats import beta, norm

    gen = torch.Generator().manual_seed(0)

    def counts(xi: torch.Tensor, num: int) -> np.ndarray:
        votes = np.zeros(10, dtype=np.int64)
        left = num
        while left > 0:
            m = min(batch, left)
            batch_x = xi.unsqueeze(0).repeat(m, 1, 1, 1)
            noise = torch.randn(batch_x.shape, generator=gen) * sigma
            pred = model(batch_x + noise).argmax(1)
            votes += np.bincount(pred.numpy(), minlength=10)
            left -= m
        return votes

    out = []
    with torch.no_grad():
        for xi in x:
            guess = int(counts(xi, n0).argmax())
            n_a = int(counts(xi, n)[guess])
            p_a = beta.ppf(alpha, n_a, n - n_a + 1) if n_a else 0.0
            out.append((guess, sigma * float(norm.ppf(p_a))) if p_a > 0.5 else (-1, 0.0))
    return out


def bench_certify(n_inputs: int, n: int, repeat: int) -> list[Row]:
    data = lk.data.load("signs", split="test", n=n_inputs)
    model = _fresh(data).eval()
    n0, sigma = 100, 0.25

    def ours() -> None:
        lk.eval.certify(
            model,
            data.x,
            sigma=sigma,
            n0=n0,
            n=n,
            batch_size=1000,
            generator=torch.Generator().manual_seed(0),
        )

    def peer() -> None:
        with model.unchecked():
            _plain_certify(model, data.x, sigma=sigma, n0=n0, n=n, alpha=0.001, batch=1000)

    t_ours, t_peer = _time_pair(ours, peer, repeat)
    samples = n_inputs * (n0 + n)
    return [
        Row(
            f"certify ({n_inputs} inputs, n={n})",
            samples / t_ours,
            "loop over inputs",
            samples / t_peer,
            "samples/s",
        )
    ]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def bench_signs(n: int, repeat: int) -> list[Row]:
    from PIL import Image

    imgs = lk.data.load("signs", split="train", n=n)
    blobs = []
    for img in imgs.x:
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(buf, format="PNG")
        blobs.append(buf.getvalue())

    def generate() -> None:
        lk.data.load("signs", split="train", n=n, seed=1)

    def decode() -> None:
        arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
        torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)

    ours, peer = _time_pair(generate, decode, repeat)
    return [Row(f"generate {n} signs", n / ours, f"decode {n} PNGs with PIL", n / peer, "images/s")]


def bench_transactions(n: int, repeat: int) -> list[Row]:
    from labkit.data.transactions import load_transactions

    table = load_transactions("train", n, seed=5)
    rows = np.column_stack([table.x.numpy(), table.y.numpy()])
    text = "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)

    def generate() -> None:
        load_transactions("train", n, seed=6)

    def parse() -> None:
        arr = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32)
        torch.from_numpy(arr[:, :-1]), torch.from_numpy(arr[:, -1].astype(np.int64))

    ours, peer = _time_pair(generate, parse, repeat)
    return [Row(f"generate {n} transactions", n / ours, f"parse {n} CSV rows", n / peer, "rows/s")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (CI smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per side (default 3, quick 1)")
    parser.add_argument("--n-train", type=int, default=None, help="training images (default 1000, quick 128)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    n_train = args.n_train or (128 if args.quick else 1000)
    n_images = 64 if args.quick else 1000
    n_cert, n_samples = (2, 200) if args.quick else (20, 1000)
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, load average {load}, median of {repeat}"
    )
    rows: list[Row] = []
    rows += bench_training(n_train, repeat)
    rows += bench_corruptions(n_images, repeat)
    rows += bench_certify(n_cert, n_samples, repeat)
    rows += bench_signs(n_images, repeat)
    rows += bench_transactions(2_000 if args.quick else 200_000, repeat)
    print(f"| {'labkit':<36} | {'rate':>10} | {'peer':<26} | {'rate':>10} | {'ratio':>6} | unit |")
    print("|" + "---|" * 6)
    for r in rows:
        print(
            f"| {r.name:<36} | {r.ours:>10.0f} | {r.peer_name:<26} | {r.peer:>10.0f} | {r.ratio:>5.2f}x "
            f"| {r.unit} |"
        )
    print("ratio = labkit rate / peer rate; > 1 means labkit is faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
