"""The procedural face data set and the eyeglass-frame accessory attack."""

from __future__ import annotations

import pytest
import torch

import labkit as lk
from labkit.attacks.accessory import accessory_attack, accessory_pgd, eyeglass_mask
from labkit.data.faces import EYES, GENERATOR_VERSION, load_faces, render_faces
from labkit.models.training import accuracy, train


@pytest.fixture(scope="module")
def recogniser() -> tuple[lk.LabModel, lk.data.LabData]:
    """A faces-cnn trained on 400 generated photos of 10 people (a few seconds on one core)."""
    data = load_faces("train", 400, seed=0)
    torch.manual_seed(0)
    model = lk.models.build("faces-cnn", data)
    train(
        model,
        data,
        epochs=6,
        lr=5e-3,
        batch_size=32,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return model, load_faces("test", 200, seed=0)


def test_shape_dtype_range_and_metadata() -> None:
    data = lk.data.load("faces", split="train", n=120, identities=6)
    assert (
        data.name == "faces" and data.split == "train" and data.classes == [f"person_{k}" for k in range(6)]
    )
    assert data.x.shape == (120, 1, 32, 32) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and data.class_counts() == [20] * 6
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    assert torch.equal((data.x * 255).round() / 255, data.x)  # 8-bit, like a camera
    assert float(data.x.std(dim=(1, 2, 3)).min()) > 0.05  # every photo has contrast
    assert data.info["generator_version"] == GENERATOR_VERSION and data.info["eyes"] == EYES


def test_same_arguments_same_data_and_prefixes_agree() -> None:
    a, b = load_faces("test", 150, seed=3), load_faces("test", 150, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    short = load_faces("test", 37, seed=3)
    assert torch.equal(short.x, a.x[:37]) and torch.equal(short.y, a.y[:37])
    assert not torch.equal(load_faces("train", 150, seed=3).x, a.x)  # splits differ
    assert not torch.equal(load_faces("test", 150, seed=4).x, a.x)  # seeds differ


def test_identities_do_not_depend_on_seed_split_or_count() -> None:
    """Person k is the same face in every split and seed, and whatever the number of people."""
    g = torch.Generator().manual_seed(0)
    ten = render_faces(torch.tensor([3]), generator=g, jitter=0, identities=10)
    forty = render_faces(
        torch.tensor([3]), generator=torch.Generator().manual_seed(9), jitter=0, identities=40
    )
    assert torch.equal(ten, forty)
    other = render_faces(torch.tensor([4]), generator=g, jitter=0, identities=10)
    assert float((ten - other).abs().mean()) > 0.02


def test_jitter_zero_is_canonical_and_jitter_varies_photos() -> None:
    g = torch.Generator().manual_seed(1)
    fixed = render_faces(torch.tensor([2, 2, 2]), generator=g, jitter=0)
    assert torch.equal(fixed[0], fixed[1]) and torch.equal(fixed[1], fixed[2])
    varied = render_faces(torch.tensor([2, 2, 2]), generator=g, jitter=1)
    assert float((varied[0] - varied[1]).abs().mean()) > 0.01
    plain = render_faces(torch.tensor([2]), generator=torch.Generator().manual_seed(0), jitter=0)
    worn = render_faces(torch.tensor([2]), generator=torch.Generator().manual_seed(0), jitter=0, glasses=1)
    change = (worn - plain).abs()[0, 0]
    frame = eyeglass_mask(32, eyes=EYES)[0].bool()
    # the glasses cover the attack's frame, and what they darken most lies on it
    assert float((change > 0.05)[frame].float().mean()) > 0.9
    strong = change > 0.2
    assert float((strong & frame).sum()) > 0.6 * float(strong.sum())


def test_photos_of_one_person_are_closer_than_photos_of_two() -> None:
    """Nearest canonical face (jitter 0) identifies most jittered photos: identities are distinguishable."""
    data = load_faces("test", 300, seed=0)
    canon = render_faces(torch.arange(10), generator=torch.Generator(), jitter=0).flatten(1)
    photos = data.x.flatten(1)

    # compare after removing each image's mean and scale (lighting), as a crude recogniser would
    def norm(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(1, keepdim=True)
        return z / z.norm(dim=1, keepdim=True)

    nearest = (norm(photos) @ norm(canon).T).argmax(1)
    # chance is 0.1; pose and background shift the pixels, so a template match gets about 0.45
    assert float((nearest == data.y).float().mean()) > 0.3


def test_a_small_cnn_learns_the_identities(recogniser: tuple[lk.LabModel, lk.data.LabData]) -> None:
    model, test = recogniser
    assert accuracy(model, test) > 0.9


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_faces("val", 10), "split"),
        (lambda: load_faces("train", 0), "n must"),
        (lambda: load_faces("train", 10, identities=1), "identities"),
        (lambda: load_faces("train", 10, jitter=3), "jitter"),
        (lambda: load_faces("train", 10, colour=True), "unknown option"),
        (lambda: load_faces("train", 10, glasses=2), "glasses"),
        (lambda: render_faces(torch.tensor([10]), generator=torch.Generator(), identities=10), "labels"),
        (lambda: render_faces(torch.tensor([0.5]), generator=torch.Generator()), "integer"),
    ],
)
def test_bad_arguments_raise_clearly(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_eyeglass_mask_is_a_frame_around_the_eyes() -> None:
    mask = eyeglass_mask(32, eyes=EYES)
    assert mask.shape == (1, 32, 32) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert 0.04 < float(mask.mean()) < 0.15  # Sharif et al.'s frames cover about 6.5% of a face
    for row, col in EYES:  # the lens itself stays clear: the eye shows through
        assert mask[0, round(row), round(col)] == 0
    assert (
        torch.equal(mask, mask.flip(-1)) or float((mask - mask.flip(-1)).abs().sum()) <= 8
    )  # near symmetric
    assert mask[0, 28:].sum() == 0 and mask[0, :4].sum() == 0  # nothing on the chin or the hair
    with pytest.raises(ValueError, match="eyes"):
        eyeglass_mask(32, eyes=((1.0,), (2.0, 3.0)))  # type: ignore[arg-type]


def test_accessory_attacks_touch_only_the_frame_and_stay_in_range(
    recogniser: tuple[lk.LabModel, lk.data.LabData],
) -> None:
    model, test = recogniser
    x, y = test.batch(16)
    before = x.clone()
    mask = eyeglass_mask(32, eyes=EYES)
    x_adv = accessory_pgd(model, x, y, mask=mask, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert torch.equal(x_adv * (1 - mask), x * (1 - mask))
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    glasses = accessory_attack(model, x, y, mask=mask, steps=3, generator=torch.Generator().manual_seed(0))
    assert glasses.pattern.shape == (1, 32, 32) and torch.equal(
        glasses.pattern * (1 - mask), torch.zeros(1, 32, 32)
    )
    again = accessory_attack(model, x, y, mask=mask, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(glasses.pattern, again.pattern)  # same generator, same frame
    with pytest.raises(ValueError, match="mask"):
        accessory_pgd(model, x, y, mask=torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="target"):
        accessory_attack(model, x, y, mask=mask, target=10)


def test_optimised_glasses_dodge_and_impersonate_where_plain_ones_do_not(
    recogniser: tuple[lk.LabModel, lk.data.LabData],
) -> None:
    """A frame optimised on 10 photos of person 0 works on their other photos; plain glasses do not."""
    model, test = recogniser
    photos = test.x[test.y == 0]
    who = torch.zeros(len(photos), dtype=torch.long)
    mask = eyeglass_mask(32, eyes=EYES)
    g = torch.Generator().manual_seed(0)
    dodge = accessory_attack(model, photos[:10], who[:10], mask=mask, steps=30, generator=g)
    impersonate = accessory_attack(model, photos[:10], who[:10], mask=mask, target=5, steps=30, generator=g)
    ordinary = lk.attacks.AccessoryResult(pattern=0.2 * mask, mask=mask, target=None)  # plain dark frame
    unseen, truth = photos[10:], who[10:]
    assert dodge.success_rate(model, unseen, truth) > ordinary.success_rate(model, unseen, truth) + 0.3
    assert impersonate.success_rate(model, unseen, truth) > 0.3  # chance of person 5 is ~0
