"""Hardening on signs: standard training, PGD-AT, TRADES and an ensemble, at L-inf eps = 8/255.

    python benchmarks/hardening.py                      # ci-sized data, 3 epochs each, one table
    python benchmarks/hardening.py --epochs 10 --n-eval 2000 --profile laptop
    python benchmarks/hardening.py --quick              # tiny sizes, a smoke run

Every defense starts from a fresh ``signs-cnn`` (the zoo's SmallCNN, width 8) trained from
scratch on the profile's training set for ``--epochs`` epochs; the training time is measured.
The ensemble is three such CNNs trained normally with different seeds, averaging their logits;
its training time is the sum of the three. Each model is then evaluated on the first
``--n-eval`` test images with ``labkit.eval.robustness``: clean accuracy, robust accuracy under
PGD-20, APGD-CE and PGD-20 on the Carlini-Wagner margin loss, and the worst case per example
across the three, all with 95% Clopper-Pearson intervals. The attacks are white-box on the
whole model, the ensemble included (it is one differentiable model).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

import labkit as lk
from labkit import hardening as H

EPS = 8 / 255


@dataclass
class Trained:
    name: str
    how: str
    model: lk.LabModel
    seconds: float


def _fresh(train: lk.data.LabData, seed: int) -> lk.LabModel:
    """An untrained signs-cnn with a seeded initialisation (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return lk.models.build("signs-cnn", train)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_all(train: lk.data.LabData, *, epochs: int, steps: int, seed: int) -> list[Trained]:
    """Standard, PGD-AT, TRADES and a three-member ensemble, each trained from scratch."""
    recipe = lk.models.RECIPES["signs-cnn"]

    def standard(model: lk.LabModel, k: int) -> None:
        lk.models.train(
            model,
            train,
            epochs=epochs,
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            generator=torch.Generator().manual_seed(seed + k),
            progress=False,
        )

    out = []
    model = _fresh(train, seed)
    out.append(Trained("standard", "cross-entropy", model, _timed(lambda: standard(model, 0))))
    gen = torch.Generator().manual_seed(seed)
    pgd_model = _fresh(train, seed)
    seconds = _timed(
        lambda: H.pgd_at(pgd_model, train, eps=EPS, epochs=epochs, steps=steps, generator=gen, progress=False)
    )
    out.append(Trained("PGD-AT", f"PGD-{steps} examples only", pgd_model, seconds))
    trades_model = _fresh(train, seed)
    seconds = _timed(
        lambda: H.trades(
            trades_model, train, eps=EPS, beta=6.0, epochs=epochs, steps=steps, generator=gen, progress=False
        )
    )
    out.append(Trained("TRADES", f"beta 6, KL-PGD-{steps}", trades_model, seconds))
    members = {}
    seconds = 0.0
    for k in range(3):
        member = _fresh(train, seed + 1 + k)
        start = time.perf_counter()
        standard(member, 1 + k)
        seconds += time.perf_counter() - start
        members[f"cnn-s{seed + 1 + k}"] = member
    ensemble = lk.ensembles.Ensemble(members, reduce="mean_logits")
    out.append(Trained("ensemble of 3", "3 standard CNNs, mean logits", ensemble, seconds))
    return out


def evaluate(
    model: lk.LabModel, x: torch.Tensor, y: torch.Tensor, *, apgd_steps: int, seed: int
) -> lk.eval.RobustnessReport:
    """Clean, per-attack and worst-case robust accuracy at EPS, with intervals."""
    gen = torch.Generator().manual_seed(seed)
    attacks = {
        "PGD-20": partial(lk.attacks.pgd, steps=20, generator=gen),
        f"APGD-CE-{apgd_steps}": partial(lk.attacks.apgd, steps=apgd_steps, generator=gen),
        "PGD-20, CW loss": partial(lk.eval.margin_pgd, steps=20, generator=gen),
    }
    return lk.eval.robustness(model, (x, y), attacks=attacks, eps=[EPS], batch_size=250)


def _cell(report: lk.eval.RobustnessReport, what: str) -> str:
    low, high = report.interval(what)
    return f"{report.accuracy(what):.1%} [{low:.1%}, {high:.1%}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, numbers meaningless)")
    parser.add_argument("--profile", default=None, help="run profile for the training set (default: active)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model (default 3)")
    parser.add_argument(
        "--steps", type=int, default=3, help="attack steps inside PGD-AT and TRADES (default 3)"
    )
    parser.add_argument("--n-eval", type=int, default=500, help="test images evaluated (default 500)")
    parser.add_argument("--apgd-steps", type=int, default=50, help="APGD iterations (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("epochs", "steps", "n_eval", "apgd_steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    profile = lk.active_profile(args.profile)
    n_train = 1024 if args.quick else None
    epochs, n_eval, apgd_steps = (2, 64, 10) if args.quick else (args.epochs, args.n_eval, args.apgd_steps)
    load_before = os.getloadavg()
    started = time.perf_counter()

    train = lk.data.load("signs", split="train", profile=profile, n=n_train)
    test = lk.data.load("signs", split="test", profile=profile)
    n_eval = min(n_eval, len(test))
    x, y = test.x[:n_eval], test.y[:n_eval]
    trained = train_all(train, epochs=epochs, steps=args.steps, seed=args.seed)
    reports = {t.name: evaluate(t.model, x, y, apgd_steps=apgd_steps, seed=args.seed) for t in trained}

    attacks = next(iter(reports.values())).attacks
    head = ["defense", "training", "train time", "clean", *attacks, "worst case"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for t in trained:
        report = reports[t.name]
        cells = [t.name, t.how, f"{t.seconds:.0f} s", _cell(report, "clean")]
        cells += [_cell(report, a) for a in attacks] + [_cell(report, "worst")]
        print("| " + " | ".join(cells) + " |")
    cpu = platform.processor() or platform.machine()
    load_after = os.getloadavg()
    print()
    print(
        f"signs, L-inf eps = 8/255, profile {profile.name}: {len(train):,} training images, first "
        f"{n_eval:,} test images; SmallCNN width 8 trained from scratch for {epochs} epoch(s) each "
        f"(Adam, one-cycle), adversarial training with {args.steps}-step attacks; attacks white-box on "
        f"the whole model; accuracies with 95% Clopper-Pearson intervals. {args.threads} thread(s), "
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}; load average "
        f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end; "
        f"{time.perf_counter() - started:.0f} s in all."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
