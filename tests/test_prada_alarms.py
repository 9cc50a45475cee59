"""PRADA on many kinds of benign traffic (false alarms) and on an extraction campaign (delay)."""

from __future__ import annotations

import pytest
import torch

import labkit as lk
from labkit.data import LabData
from labkit.serving import BENIGN_PATTERNS, benign_traffic, prada, prada_alarms


@pytest.fixture(scope="module")
def digits() -> LabData:
    return lk.data.load("digits", split="train")


def streams_of(data: LabData, pattern: str, count: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` streams of one pattern, labelled by a perfect model (the true class of each digit)."""
    out = []
    for seed in range(count):
        x = benign_traffic(data, pattern=pattern, n=n, generator=torch.Generator().manual_seed(seed))
        nearest = torch.cdist(x.flatten(1), data.x.flatten(1)).argmin(dim=1)  # noisy copies: their source
        out.append((x, data.y[nearest]))
    return out


def test_benign_patterns_have_their_shape(digits: LabData) -> None:
    """Each pattern gives n images in [0, 1] with the structure its name promises."""
    g = torch.Generator
    for pattern in BENIGN_PATTERNS:
        x = benign_traffic(digits, pattern=pattern, n=41, generator=g().manual_seed(0))
        assert x.shape == (41, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    repeats = benign_traffic(digits, pattern="repeats", n=40, generator=g().manual_seed(0))
    assert torch.equal(repeats[0::2], repeats[1::2])
    retries = benign_traffic(digits, pattern="retries", n=40, generator=g().manual_seed(0))
    gap = (retries[0::2] - retries[1::2]).flatten(1).norm(dim=1)
    assert bool((gap > 0).all()) and float(gap.max()) < 0.5
    natural = benign_traffic(digits, pattern="natural", n=200, generator=g().manual_seed(0))
    bursts = benign_traffic(digits, pattern="class bursts", n=200, generator=g().manual_seed(0))
    labels = streams_of(digits, "class bursts", 1, 200)[0][1]
    assert bool((labels[1:] >= labels[:-1]).all()), "bursts arrive class by class"
    assert sorted(natural.flatten(1).sum(1).tolist()) == pytest.approx(
        sorted(bursts.flatten(1).sum(1).tolist())
    )
    noisy = benign_traffic(digits, pattern="noisy", n=200, generator=g().manual_seed(0))
    assert 0.05 < float((noisy - natural).abs().mean()) < 0.2


def test_prada_false_alarms_and_detection_delay(digits: LabData) -> None:
    """No alarm on natural traffic; exact and near repeats are false alarms; a synthetic walk is caught."""
    streams = {p: streams_of(digits, p, 3, 300) for p in ("natural", "repeats", "retries")}
    g = torch.Generator().manual_seed(0)
    steps = [digits.x[:20]]
    for _ in range(4):  # Papernot-style augmentation: every known point plus a sign step
        known = torch.cat(steps)
        steps.append((known + 0.1 * torch.randn(known.shape, generator=g).sign()).clamp(0, 1))
    walk, walk_labels = torch.cat(steps), digits.y[:20].repeat(16)
    streams["synthetic"] = [(walk, walk_labels)]
    table = prada_alarms(streams)
    assert table.rows["natural"]["rate"] == 0.0
    assert table.rows["repeats"]["rate"] == 1.0 and table.rows["retries"]["rate"] == 1.0
    synthetic = table.rows["synthetic"]
    assert synthetic["rate"] == 1.0
    assert synthetic["median_first_alarm"] == prada(walk, walk_labels).first_alarm + 1  # type: ignore[operator]
    assert 50 < synthetic["median_first_alarm"] < 150
    text = table._repr_markdown_()
    assert "| natural | 3 | 0 (0%) | – |" in text and "δ = 0.9" in text
    stricter = prada_alarms({"retries": streams["retries"]}, delta=0.5)
    assert stricter.rows["retries"]["rate"] <= table.rows["retries"]["rate"]


def test_benign_traffic_and_alarms_bad_arguments(digits: LabData) -> None:
    """Unknown patterns, too few examples and malformed stream groups are named."""
    with pytest.raises(ValueError, match="pattern must be one of"):
        benign_traffic(digits, pattern="bots", n=10)
    with pytest.raises(ValueError, match="n must be an integer of at least 8"):
        benign_traffic(digits, pattern="natural", n=3)
    with pytest.raises(ValueError, match="need at least 2000 examples"):
        benign_traffic(digits, pattern="natural", n=2000)
    with pytest.raises(TypeError, match="data must be a LabData"):
        benign_traffic(digits.x, pattern="natural", n=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty mapping"):
        prada_alarms({})
    with pytest.raises(ValueError, match=r"streams\['natural'\] must be a non-empty list"):
        prada_alarms({"natural": []})
    with pytest.raises(ValueError, match=r"must be a non-empty list"):
        prada_alarms({"natural": (digits.x, digits.y)})  # type: ignore[dict-item]
