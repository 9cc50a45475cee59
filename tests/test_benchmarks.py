"""The benchmark scripts still run: a --quick smoke run of each, rows and ratios checked, numbers not."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load(root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", root / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_run_py_quick_prints_one_row_per_benchmark_with_a_ratio(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _load(root, "run", monkeypatch).main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "load average" in out
    rows = (
        "train 1 epoch",
        "PGD-AT 1 epoch",
        "FGSM-RS 1 epoch",
        "corruption_benchmark",
        "certify",
        "generate",
    )
    for name in rows:
        row = next((line for line in out.splitlines() if line.startswith(f"| {name}")), None)
        assert row is not None, f"no row for {name}"
        assert re.search(r"\| +\d+\.\d\dx \|", row), f"no ratio in {row!r}"


@pytest.mark.slow
def test_attacks_py_runs_on_resnet18(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torchattacks", reason='optional peer: pip install --no-deps "torchattacks>=3.5"')
    module = _load(root, "attacks", monkeypatch)
    assert module.main(["--quick", "--models", "resnet18", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    for name in ("FGSM", "PGD-10", "CW-5", "Square-20"):
        assert f"| resnet18   | {name}" in out


def test_resnet18_is_a_labmodel_with_ten_classes(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ResNet-18 of the attack benchmark: random but seeded, 32x32 RGB in, 10 logits out."""
    import torch

    module = _load(root, "attacks", monkeypatch)
    a, b = module._resnet18(torch.device("cpu")), module._resnet18(torch.device("cpu"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert a(x).shape == (2, 10) and not a.training
    torch.testing.assert_close(a(x), b(x))
