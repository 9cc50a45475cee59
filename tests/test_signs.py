"""The procedural traffic-sign generator: shapes, determinism, balance, difficulty, errors."""

from __future__ import annotations

import pytest
import torch

import labkit as lk
from labkit.contract import LabModel
from labkit.data.signs import CLASSES, GENERATOR_VERSION, load_signs, render
from labkit.models.nets import SmallCNN
from labkit.models.training import accuracy, train

SPEEDS = ("speed_30", "speed_50", "speed_80")


def canonical(label: str, seed: int = 0) -> torch.Tensor:
    """The difficulty-0 rendering of one class, shape (3, 32, 32)."""
    g = torch.Generator().manual_seed(seed)
    return render(torch.tensor([CLASSES.index(label)]), generator=g, difficulty=0)[0]


def test_class_list_keeps_the_indices_lessons_rely_on() -> None:
    assert len(CLASSES) >= 8 and len(set(CLASSES)) == len(CLASSES)
    assert CLASSES.index("stop") == 0
    assert [CLASSES.index(s) for s in SPEEDS] == [3, 4, 5]
    assert {"yield", "no_entry"} <= set(CLASSES)


def test_generator_version_is_recorded_and_keys_the_cached_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bumping GENERATOR_VERSION (after any change to the renderer) retires the cached models."""
    assert load_signs("test", 4, seed=0).info["generator_version"] == GENERATOR_VERSION >= 1
    before = lk.models.weights_path("signs-cnn", "ci")
    monkeypatch.setattr("labkit.data.signs.GENERATOR_VERSION", GENERATOR_VERSION + 1)
    assert lk.models.weights_path("signs-cnn", "ci") != before


def test_shape_dtype_range_and_metadata() -> None:
    data = load_signs("train", 300, seed=0)
    assert data.name == "signs" and data.split == "train" and data.classes == CLASSES
    assert data.x.shape == (300, 3, 32, 32) and data.x.dtype == torch.float32
    assert data.y.shape == (300,) and data.y.dtype == torch.int64
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    assert data.x.is_contiguous()
    # quantised to 8 bits, like a camera image
    assert torch.equal((data.x * 255).round() / 255, data.x)
    # real images, not flat frames: every image has contrast
    assert float(data.x.std(dim=(1, 2, 3)).min()) > 0.02
    assert data.info["generator_version"] == GENERATOR_VERSION
    assert data.info["difficulty"] == 1.0 and data.info["background"] is True
    assert data.info["seed"] == 0


def test_a_single_image_works() -> None:
    data = load_signs("test", 1, seed=5)
    assert data.x.shape == (1, 3, 32, 32) and len(data) == 1
    assert 0 <= int(data.y[0]) < len(CLASSES)


def test_same_arguments_give_bit_identical_data() -> None:
    a = load_signs("train", 260, seed=3, difficulty=0.7)
    b = load_signs("train", 260, seed=3, difficulty=0.7)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_seeds_and_splits_give_different_data() -> None:
    base = load_signs("train", 200, seed=0)
    other_seed = load_signs("train", 200, seed=1)
    test_split = load_signs("test", 200, seed=0)
    for other in (other_seed, test_split):
        assert not torch.equal(base.y, other.y)
        # no image repeats between the two
        assert float(torch.cdist(base.x.flatten(1), other.x.flatten(1)).min()) > 0.5


def test_first_k_images_do_not_depend_on_n() -> None:
    big = load_signs("train", 520, seed=2)
    for k in (1, 100, 250, 333):
        small = load_signs("train", k, seed=2)
        assert torch.equal(big.x[:k], small.x), k
        assert torch.equal(big.y[:k], small.y), k


def test_classes_are_balanced_and_all_present() -> None:
    counts = load_signs("train", 1000, seed=0).class_counts()
    assert counts == [1000 // len(CLASSES)] * len(CLASSES)
    counts = load_signs("test", 400, seed=7).class_counts()
    assert min(counts) >= 20 and max(counts) <= 60, counts


def test_the_same_seed_shows_the_same_scene_at_every_difficulty() -> None:
    mild = load_signs("test", 50, seed=0, difficulty=0.5)
    harsh = load_signs("test", 50, seed=0, difficulty=1.5)
    assert torch.equal(mild.y, harsh.y)
    assert not torch.equal(mild.x, harsh.x)


def test_difficulty_zero_is_the_canonical_sign() -> None:
    for label in CLASSES:
        assert torch.equal(canonical(label, seed=0), canonical(label, seed=123)), label
    stop = canonical("stop")
    # centred: the image is symmetric left to right apart from the lettering
    assert (stop - stop.flip(-1)).abs().mean() < 0.05
    # a plain background in the corners, the sign's red in the middle of its border band
    assert stop[:, 0, 0].tolist() == pytest.approx([0.56, 0.62, 0.68], abs=0.01)
    r, g, b = stop[:, 8, 16].tolist()
    assert r > 0.6 and g < 0.3 and b < 0.3
    # every class looks different
    images = torch.stack([canonical(label) for label in CLASSES]).flatten(1)
    gaps = torch.cdist(images, images) + torch.eye(len(CLASSES)) * 1e3
    assert float(gaps.min()) > 1.0


def test_speed_limits_differ_only_in_their_numerals() -> None:
    a, b, c = (canonical(s) for s in SPEEDS)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ring = ((ys - 15.5) ** 2 + (xs - 15.5) ** 2).sqrt() > 0.8 * 0.84 * 16 + 1
    for one, other in ((a, b), (a, c), (b, c)):
        diff = (one - other).abs().sum(0)
        assert float(diff[ring].max()) == 0.0
        assert float(diff[~ring].sum()) > 5.0


def test_variation_grows_with_difficulty() -> None:
    labels = torch.full((64,), CLASSES.index("stop"))
    ref = canonical("stop")
    spread = []
    for difficulty in (0.0, 0.5, 1.0, 2.0):
        g = torch.Generator().manual_seed(0)
        x = render(labels, generator=g, difficulty=difficulty)
        spread.append(float((x - ref).abs().mean()))
    assert spread[0] == 0.0
    assert spread[1] < spread[2] < spread[3], spread
    assert spread[2] > 0.1


def test_background_false_gives_plain_backgrounds() -> None:
    def spread_of_hues(background: bool) -> float:
        corner = load_signs("test", 200, seed=0, background=background).x[:, :, :3, :3].mean((2, 3))
        chroma = corner / corner.sum(1, keepdim=True)  # colour without brightness
        return float(chroma.std(0).mean())

    # a plain background changes only with the lighting's mild colour cast
    assert spread_of_hues(False) < 0.5 * spread_of_hues(True)


def test_render_uses_only_its_generator() -> None:
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    first = render(torch.arange(len(CLASSES)), generator=g)
    assert torch.equal(torch.get_rng_state(), state)
    again = render(torch.arange(len(CLASSES)), generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    assert render(torch.arange(3), generator=g, size=48).shape == (3, 3, 48, 48)


def test_options_flow_through_the_data_registry() -> None:
    data = lk.data.load("signs", split="test", n=30, difficulty=0, background=False)
    for image, label in zip(data.x, data.y, strict=True):
        assert torch.equal(image, canonical(CLASSES[int(label)]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, r"split must be 'train' or 'test', got 'val'"),
        ({"n": 0}, r"n must be a positive integer, got 0"),
        ({"n": -5}, r"n must be a positive integer, got -5"),
        ({"n": 2.5}, r"n must be a positive integer, got 2.5"),
        ({"n": True}, r"n must be a positive integer, got True"),
        ({"seed": "0"}, r"seed must be an integer"),
        ({"colour": 1}, r"unknown option\(s\) 'colour' for signs; known options: difficulty, background"),
        ({"difficulty": -0.1}, r"difficulty must be in \[0, 2.0\].*got -0.1"),
        ({"difficulty": 3}, r"difficulty must be in \[0, 2.0\]"),
        ({"difficulty": float("nan")}, r"difficulty must be in"),
        ({"difficulty": "hard"}, r"difficulty must be a number"),
        ({"background": "yes"}, r"background must be True or False, got 'yes'"),
    ],
)
def test_load_signs_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"split": "train", "n": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_signs(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (torch.tensor([0, 10]), {}, r"labels must lie in \[0, 9\].*from 0 to 10"),
        (torch.tensor([-1]), {}, r"labels must lie in \[0, 9\]"),
        (torch.tensor([0.0, 1.0]), {}, r"labels must be an integer tensor"),
        (torch.zeros(2, 2, dtype=torch.long), {}, r"labels must be a 1-D tensor"),
        (torch.tensor([0]), {"generator": None}, r"generator must be a torch.Generator"),
        (torch.tensor([0]), {"difficulty": -1}, r"difficulty must be in \[0, 2.0\]"),
        (torch.tensor([0]), {"size": 4}, r"size must be an integer of at least 8"),
    ],
)
def test_render_rejects_bad_arguments(labels: torch.Tensor, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        render(labels, **args)  # type: ignore[arg-type]


def test_a_tiny_model_learns_the_signs_in_seconds(one_thread: None) -> None:
    train_data = load_signs("train", 2000, seed=0)
    test_data = load_signs("test", 500, seed=0)
    torch.manual_seed(0)
    mean, std = train_data.stats()
    model = LabModel(
        SmallCNN(3, len(CLASSES), image_size=32, width=4, hidden=64),
        input_shape=(3, 32, 32),
        num_classes=len(CLASSES),
        mean=mean,
        std=std,
        value_range=(0.0, 1.0),
    )
    train(
        model,
        train_data,
        epochs=4,
        lr=5e-3,
        batch_size=64,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert accuracy(model, test_data) > 0.5  # chance is 0.1
