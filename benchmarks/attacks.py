"""Attack speed: labkit against torchattacks in the same run, on the same batch and settings.

    python benchmarks/attacks.py                 # digits-cnn and signs-cnn, one table
    python benchmarks/attacks.py --quick         # tiny sizes, a CI smoke run
    python benchmarks/attacks.py --threads 1 --repeat 5 --batch 256
    python benchmarks/attacks.py --models resnet18 --batch 32 --repeat 3

For each model and attack (FGSM, PGD-10, CW with 50 Adam steps, Square with 200 queries) it
times labkit and torchattacks alternately (one warm-up each, then the median of ``--repeat``
runs) and prints both times and their ratio; ratio > 1 means labkit is faster. For PGD it also
times the floor no implementation can beat: ``k`` forward and backward passes of the model on
the same batch, written out directly, and prints each side's overhead over it. Goals: labkit no
slower than torchattacks (ratio >= 1 within timing noise), PGD overhead within 15%.

``resnet18`` is torchvision's ResNet-18 (random initialisation, seeded, 10 classes) on 32x32
signs images, wrapped in ``lk.LabModel``: a model the size workshops fine-tune, where the forward
and backward passes dominate and the attacks' own bookkeeping matters least. Its labels are its
own predictions, so "broken" is the fraction of decisions the attack changed.

torchattacks gets its own copy of each model (its CW calls ``.backward()`` and would leave
gradients on labkit's), with input checks off: the same unchecked model labkit's attacks run
once they have validated their inputs, so the ratio compares like with like. labkit's PGD
validates its inputs once and keeps the best point per example from the logits each step
computes anyway (no extra pass); that is part of what the overhead column measures. During an
attack labkit also folds each eval-mode batch norm into the convolution before it
(``labkit.attacks._fold``, the same function to float rounding); the peer runs the model as it is.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.nn import functional as F

import labkit as lk

DATASETS = {"digits-cnn": "digits", "signs-cnn": "signs", "resnet18": "signs"}
EPS = {"digits-cnn": 0.1, "signs-cnn": 8 / 255, "resnet18": 8 / 255}
DEFAULT_MODELS = ["digits-cnn", "signs-cnn"]
ATTACKS = ("FGSM", "PGD", "CW", "Square")


def _resnet18(device: torch.device) -> lk.LabModel:
    """torchvision's ResNet-18, random initialisation (seeded), 10 classes, 32x32 RGB inputs."""
    from torchvision.models import resnet18

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = resnet18(weights=None, num_classes=10)
    return lk.LabModel(net, input_shape=(3, 32, 32), num_classes=10).to(device).eval()


def _models(name: str, batch: int, device: torch.device) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    """labkit's model, the peer's copy of it, and a batch ``(x, y)`` on ``device``."""
    data = lk.data.load(DATASETS[name], split="test")
    x, y = data.batch(min(batch, len(data)), device=device)
    if name == "resnet18":
        model = _resnet18(device)
        y = model.predict(x)
    else:
        model = lk.models.pretrained(name, device=device, progress=False)
    peer = copy.deepcopy(model)
    peer.check_inputs = False  # what labkit's attacks run on once their inputs are checked
    return model, peer, x, y


@dataclass
class Row:
    model: str
    attack: str
    labkit: float
    peer: float
    limit: float | None = None  # k x (forward + backward), for PGD
    broken: tuple[float, float] = (math.nan, math.nan)  # fraction misclassified after each attack

    @property
    def ratio(self) -> float:
        return self.peer / self.labkit

    def overhead(self, seconds: float) -> str:
        return "" if self.limit is None else f"{100 * (seconds / self.limit - 1):+.0f}%"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_pair(
    ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], repeat: int, device: torch.device
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Median seconds of each after one warm-up (alternating, so that load drifts hit both), and
    the warm-up outputs."""
    a: list[float] = []
    b: list[float] = []
    first = ours(), theirs()
    for _ in range(repeat):
        for fn, runs in ((ours, a), (theirs, b)):
            _sync(device)
            start = _clock()
            fn()
            _sync(device)
            runs.append(_clock() - start)
    return statistics.median(a), statistics.median(b), first[0], first[1]


def _time_one(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Median seconds of ``fn`` after one warm-up."""
    fn()
    runs = []
    for _ in range(repeat):
        _sync(device)
        start = _clock()
        fn()
        _sync(device)
        runs.append(_clock() - start)
    return statistics.median(runs)


def _forward_backward(model: lk.LabModel, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """The PGD floor: k forward and backward passes to the input, nothing else."""
    with model.unchecked():
        for _ in range(k):
            xg = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y)
            torch.autograd.grad(loss, xg)


def _broken(model: lk.LabModel, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv.detach()).argmax(1) != y).float().mean())


def bench_model(
    name: str,
    *,
    batch: int,
    repeat: int,
    quick: bool,
    device: torch.device,
    torchattacks: Any,
    attacks: Sequence[str] = ATTACKS,
) -> list[Row]:
    ta = torchattacks
    model, peer, x, y = _models(name, batch, device)
    eps = EPS[name]
    steps_pgd = 10
    steps_cw = 5 if quick else 50
    queries = 20 if quick else 200
    alpha = eps / 4

    def lk_pgd() -> torch.Tensor:
        return lk.attacks.pgd(
            model, x, y, eps=eps, steps=steps_pgd, step_size=alpha, generator=torch.Generator().manual_seed(0)
        )

    cases: list[tuple[str, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = [
        ("FGSM", partial(lk.attacks.fgsm, model, x, y, eps=eps), partial(ta.FGSM(peer, eps=eps), x, y)),
        (
            f"PGD-{steps_pgd}",
            lk_pgd,
            partial(ta.PGD(peer, eps=eps, alpha=alpha, steps=steps_pgd, random_start=True), x, y),
        ),
        (
            f"CW-{steps_cw}",
            partial(lk.attacks.cw, model, x, y, steps=steps_cw, search_steps=1, lr=0.01),
            partial(ta.CW(peer, c=1, kappa=0, steps=steps_cw, lr=0.01), x, y),
        ),
        (
            f"Square-{queries}",
            # torchattacks' n_queries counts iterations; labkit's budget also counts the clean
            # input and the starting point, hence + 2 for the same number of iterations.
            lambda: (
                lk.attacks.square(
                    model,
                    x,
                    y,
                    eps=eps,
                    max_queries=queries + 2,
                    p_init=0.8,
                    generator=torch.Generator().manual_seed(0),
                ).x_adv
            ),
            partial(ta.Square(peer, eps=eps, n_queries=queries, p_init=0.8, n_restarts=1, seed=0), x, y),
        ),
    ]
    rows = []
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lk.attacks.QueryBudgetWarning)
        for label, ours, theirs in cases:
            if label.split("-")[0] not in attacks:
                continue
            t_ours, t_theirs, x_ours, x_theirs = _time_pair(ours, theirs, repeat, device)
            row = Row(name, label, t_ours, t_theirs)
            row.broken = (_broken(model, x_ours, y), _broken(model, x_theirs, y))
            if label.startswith("PGD"):
                row.limit = _time_one(lambda: _forward_backward(model, x, y, steps_pgd), repeat, device)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (CI smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per side (default 5, quick 1)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default 128, quick 16)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=DEFAULT_MODELS,
        choices=list(DATASETS),
        help="models to attack (default: digits-cnn signs-cnn; resnet18 is the large one)",
    )
    parser.add_argument(
        "--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS, help="attacks to time (default: all)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=list(CLOCKS),
        help="wall: elapsed seconds; cpu: this process's CPU seconds, steadier on a shared machine "
        "(with --threads 1 and a CPU device only)",
    )
    args = parser.parse_args(argv)
    try:
        import torchattacks
    except ImportError:
        print('torchattacks is missing: pip install --no-deps "torchattacks>=3.5"')
        return 1
    global _clock
    _clock = CLOCKS[args.clock]
    repeat = args.repeat or (1 if args.quick else 5)
    batch = args.batch or (16 if args.quick else 128)
    device = lk.pick_device(args.device)
    saved_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cpu = platform.processor() or platform.machine()
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(
            f"machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, device {device}, "
            f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, batch {batch}, "
            f"median of {repeat}, {args.clock} clock, load average {load}"
        )
        rows: list[Row] = []
        for name in args.models:
            rows += bench_model(
                name,
                batch=batch,
                repeat=repeat,
                quick=args.quick,
                device=device,
                torchattacks=torchattacks,
                attacks=args.attacks,
            )
    finally:
        torch.set_num_threads(saved_threads)
    print(
        f"| {'model':<10} | {'attack':<10} | {'labkit s':>9} | {'torchattacks s':>14} | {'ratio':>6} "
        f"| {'k x (fwd+bwd) s':>15} | {'labkit over':>11} | {'torchattacks over':>17} "
        f"| {'broken (labkit / ta)':>20} |"
    )
    print("|" + "---|" * 9)
    for r in rows:
        limit = f"{r.limit:>15.4f}" if r.limit is not None else " " * 15
        print(
            f"| {r.model:<10} | {r.attack:<10} | {r.labkit:>9.4f} | {r.peer:>14.4f} | {r.ratio:>5.2f}x "
            f"| {limit} | {r.overhead(r.labkit):>11} | {r.overhead(r.peer):>17} "
            f"| {r.broken[0]:>9.1%} / {r.broken[1]:>6.1%} |"
        )
    print("ratio = torchattacks time / labkit time; > 1 means labkit is faster")
    print(
        "overhead = time over k forward+backward passes of the same batch, model as it is (goal for"
        " labkit PGD: <= +15%; labkit folds eval batch norm into the convolutions, so it can read < 0)"
    )
    print("broken = fraction of the batch misclassified after the attack (same settings, for context)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
