"""Adversarial training under torchrun: two processes (gloo, CPU) match one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.hardening import distributed

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed"
)

# A model without dropout or batch norm and a deterministic attack (FGSM from the clean point):
# then the only difference between one and two processes is how the gradient sum is split.
ARGS = ["--recipe", "fgsm", "--mlp", "--examples", "384", "--epochs", "3", "--batch-size", "64"]
ARGS += ["--monitor-size", "64", "--eps", "0.1", "--lr", "0.01"]


def _run(cmd: list[str], cache: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_CACHE": str(cache)}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def test_two_processes_match_one(tmp_path: Path) -> None:
    """DDP on 2 processes gives the weights and history of single-process training, within float noise."""
    single, double = tmp_path / "one.pt", tmp_path / "two.pt"
    module = ["-m", "labkit.hardening.distributed"]
    _run([sys.executable, *module, "--out", str(single), *ARGS], tmp_path)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _run([*launcher, *module, "--out", str(double), *ARGS], tmp_path)

    one, two = (
        json.loads(single.with_suffix(".json").read_text()),
        json.loads(double.with_suffix(".json").read_text()),
    )
    assert (one["world_size"], two["world_size"]) == (1, 2)
    w1, w2 = torch.load(single, weights_only=True), torch.load(double, weights_only=True)
    assert w1.keys() == w2.keys()
    moved = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert moved < 1e-4, f"weights differ by up to {moved:.2e}"
    for r1, r2 in zip(one["rows"], two["rows"], strict=True):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-4), (
            "the epoch loss should be summed over processes"
        )
        assert r1["train_adv_acc"] == pytest.approx(r2["train_adv_acc"], abs=1 / 384)
        assert r1["robust_acc"] == pytest.approx(r2["robust_acc"], abs=1 / 64)
    # it learned something: the trained weights are not the initial ones and beat chance
    assert one["rows"][-1]["clean_acc"] > 0.5


def test_trades_runs_data_parallel(tmp_path: Path) -> None:
    """TRADES (two forward passes per step on one process) runs under DDP and learns."""
    out = tmp_path / "trades.pt"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = (
        "--recipe trades --mlp --examples 256 --epochs 3 --batch-size 64 --monitor-size 64 --lr 0.01".split()
    )
    _run([*launcher, "-m", "labkit.hardening.distributed", "--out", str(out), *args], tmp_path)
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[-1]["clean_acc"] > 0.3 and rows[-1]["loss"] < rows[0]["loss"]


def test_without_torchrun_nothing_is_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside torchrun the helpers are no-ops and report one process."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rank, world, device = distributed.init_process_group()
    assert (rank, world) == (0, 1) and not torch.distributed.is_initialized()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    distributed.destroy_process_group()
