"""labkit.data: the registry, the digits split and the LabData object."""

from __future__ import annotations

import pytest
import torch

import labkit as lk
from labkit.data import LabData


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    train = lk.data.load("digits", split="train")
    test = lk.data.load("digits", split="test")
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (1, 8, 8) and train.x.dtype == torch.float32
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0
    counts = torch.tensor(test.class_counts(), dtype=torch.float)
    assert counts.min() >= 0.8 * counts.mean(), "the split should be stratified"
    again = lk.data.load("digits", split="test")
    assert torch.equal(test.x, again.x)
    train_rows = {tuple(r.tolist()) for r in train.x.flatten(1)}
    overlap = sum(tuple(r.tolist()) in train_rows for r in test.x.flatten(1))
    assert overlap < 10, "train and test should be different images (a few duplicates exist)"


def test_n_limits_size() -> None:
    assert len(lk.data.load("digits", split="train", n=100)) == 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "imagenet"}, "unknown data set 'imagenet'; choose one of digits, signs"),
        ({"name": "digits", "split": "val"}, "split must be 'train' or 'test'"),
        ({"name": "digits", "n": 0}, "n must be a positive integer"),
        ({"name": "digits", "profile": "huge"}, "unknown profile 'huge'"),
    ],
)
def test_load_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lk.data.load(**kwargs)


def test_labdata_batch_subset_and_loader() -> None:
    x = torch.rand(10, 1, 2, 2)
    y = torch.arange(10) % 2
    data = LabData(name="toy", split="train", x=x, y=y, classes=["a", "b"])
    xb, yb = data.batch(4, start=2)
    assert torch.equal(xb, x[2:6]) and torch.equal(yb, y[2:6])
    with pytest.raises(ValueError, match="has 10"):
        data.batch(11)
    sub = data.subset([0, 3])
    assert len(sub) == 2 and torch.equal(sub.y, y[[0, 3]])
    seen = torch.cat([b for _, b in data.loader(3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted(y.tolist())
    assert data.class_counts() == [5, 5]
    assert "| examples | 10 |" in data._repr_markdown_()


def test_labdata_validates_construction() -> None:
    with pytest.raises(ValueError, match="x has 3 rows but y has 2"):
        LabData(
            name="t", split="train", x=torch.rand(3, 2), y=torch.zeros(2, dtype=torch.long), classes=["a"]
        )
    with pytest.raises(TypeError, match="int64"):
        LabData(name="t", split="train", x=torch.rand(2, 2), y=torch.zeros(2), classes=["a"])


def test_stats_are_per_channel() -> None:
    x = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)]).unsqueeze(0).repeat(4, 1, 1, 1)
    data = LabData(name="t", split="train", x=x, y=torch.zeros(4, dtype=torch.long), classes=["a"])
    mean, std = data.stats()
    assert torch.allclose(mean, torch.tensor([0.0, 1.0]))
    assert bool((std > 0).all())
