"""Opt-in speed features (labkit.speed): off under ci, equal results within the stated
tolerances when turned on, clear errors for bad settings, and no per-step host syncs on a GPU."""

from __future__ import annotations

import copy
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import labkit as lk
from labkit import speed
from labkit.config import FALLBACK_PROFILE
from labkit.course.manifest import CourseError, load_course
from labkit.hardening import adversarial_training, pgd_train_attack
from labkit.speed import SpeedConfig

BF16_CPU = SpeedConfig(autocast="bf16", channels_last=True, on_cpu=True)


@pytest.fixture(scope="module")
def digits() -> tuple[lk.LabModel, torch.Tensor, torch.Tensor]:
    model = lk.models.pretrained("digits-cnn", progress=False)
    data = lk.data.load("digits", split="test")
    return model, data.x[:200], data.y[:200]


def _pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return lk.attacks.pgd(model, x, y, eps=0.1, steps=10, generator=torch.Generator().manual_seed(0))


# --- off by default -------------------------------------------------------------------------------


def test_ci_profile_and_fallback_keep_every_feature_off(
    course: lk.course.Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ci (and without a course.yml) nothing is on; the gpu profile turns features on."""
    assert course.profile("ci").speed == FALLBACK_PROFILE.speed == SpeedConfig()
    assert not course.profile("ci").speed.enabled and not course.profile("laptop").speed.enabled
    assert course.profile("gpu").speed.enabled
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    assert not speed.current().enabled
    monkeypatch.setenv("LABKIT_PROFILE", "gpu")
    assert not speed.current().enabled, "the profile alone turns nothing on: a caller must"
    before = speed.current()
    try:
        assert lk.active_profile().name == "gpu"  # the notebooks' setup call turns them on
        assert speed.current() == course.profile("gpu").speed
    finally:
        speed.set_default(before)
    assert not speed.current().enabled


def test_what_an_attack_computes_does_not_depend_on_the_folder(
    digits: Any, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A course.yml in the working directory whose profile turns bf16 on (CPU too) changes nothing."""
    model, x, y = digits
    expected = _pgd(model, x, y)
    raw = yaml.safe_load((root / "course.yml").read_text(encoding="utf-8"))
    raw["profiles"]["gpu"]["speed"]["on_cpu"] = True
    (tmp_path / "course.yml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_PROFILE", "gpu")
    monkeypatch.delenv("LABKIT_COURSE", raising=False)
    assert not speed.current().enabled
    torch.testing.assert_close(_pgd(model, x, y), expected, rtol=0, atol=0)


def test_off_features_are_no_ops(digits: Any) -> None:
    """With everything off: the same logits bit for bit, no autocast, the model untouched."""
    model, x, _ = digits
    off = SpeedConfig()
    torch.testing.assert_close(speed.logits(model, x, off), model(x), rtol=0, atol=0)
    with speed.autocast("cpu", off):
        assert not torch.is_autocast_enabled("cpu")
    before = {k: v.stride() for k, v in model.state_dict().items()}
    assert speed.prepare(model, off) is model
    assert {k: v.stride() for k, v in model.state_dict().items()} == before
    assert speed.batch_size(256, "cpu", SpeedConfig(batch_size=4096)) == 256


def test_cuda_only_features_do_not_touch_cpu_tensors(digits: Any) -> None:
    """Without on_cpu, a bf16 config leaves CPU computations in float32."""
    model, x, _ = digits
    gpu_only = SpeedConfig(autocast="bf16", channels_last=True)
    with speed.autocast("cpu", gpu_only):
        assert not torch.is_autocast_enabled("cpu")
    torch.testing.assert_close(speed.logits(model, x, gpu_only), model(x), rtol=0, atol=0)


# --- on, on the CPU: equal within the tolerances ---------------------------------------------------


def test_bf16_autocast_predictions_agree_within_tolerance(digits: Any) -> None:
    """bf16 autocast changes the logits (it is really on) but not the predictions, beyond
    PREDICTION_AGREEMENT."""
    model, x, _ = digits
    exact = model(x)
    fast = speed.logits(model, x, SpeedConfig(autocast="bf16", on_cpu=True))
    assert fast.dtype == x.dtype
    assert not torch.equal(fast, exact)
    agree = (fast.argmax(1) == exact.argmax(1)).float().mean().item()
    assert agree >= speed.PREDICTION_AGREEMENT


def test_channels_last_gives_the_same_logits(digits: Any) -> None:
    model, x, _ = digits
    exact = model(x)
    fast_model = copy.deepcopy(model)
    speed.prepare(fast_model, SpeedConfig(channels_last=True, on_cpu=True))
    convs = [m for m in fast_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    torch.testing.assert_close(fast_model(x), exact, rtol=0, atol=speed.LOGIT_ATOL)


def test_robust_accuracy_under_speed_features_within_tolerance(digits: Any) -> None:
    """PGD robust accuracy with bf16 + channels_last stays within ROBUST_ACCURACY_TOLERANCE of float32,
    and the attack still obeys the threat model."""
    model, x, y = digits
    exact = lk.attacks.robust_accuracy(model, x, y, _pgd)
    fast_model = speed.prepare(copy.deepcopy(model), BF16_CPU)
    with speed.use(BF16_CPU):
        x_adv = _pgd(fast_model, x, y)
        fast = lk.attacks.robust_accuracy(fast_model, x, y, _pgd)
    assert x_adv.dtype == x.dtype and (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert exact < 0.9, "the attack must bite for the comparison to mean something"
    assert abs(fast - exact) <= speed.ROBUST_ACCURACY_TOLERANCE, (exact, fast)


def test_adversarial_training_under_bf16_matches_float32() -> None:
    """One epoch of PGD adversarial training: the loss under bf16 autocast is within 5% of float32."""
    data = lk.data.load("digits", split="train", n=128)
    losses = []
    for config in (SpeedConfig(), BF16_CPU):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = speed.prepare(lk.models.build("digits-cnn", data), config)
        attack = partial(pgd_train_attack, eps=0.1, steps=2, generator=torch.Generator().manual_seed(0))
        with speed.use(config):
            history = adversarial_training(
                model, data, attack=attack, epochs=1, batch_size=16, monitor_size=0, progress=False
            )
        losses.append(history.final["loss"])
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


# --- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ({"complie": True}, ValueError, r"speed: unknown key 'complie'; expected keys among autocast"),
        ({"autocast": "fp8"}, ValueError, r"autocast must be one of 'off', 'bf16', 'fp16', got 'fp8'"),
        ({"autocast": True}, ValueError, r"autocast must be one of"),
        ({"channels_last": "yes"}, ValueError, r"channels_last must be true or false, got 'yes'"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer or None, got 0"),
        ([1, 2], ValueError, r"speed: expected a mapping"),
    ],
)
def test_bad_config_raises_clearly(raw: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SpeedConfig.from_mapping(raw)


def test_autocast_off_in_yaml_means_off() -> None:
    assert SpeedConfig.from_mapping(yaml.safe_load("autocast: off")) == SpeedConfig()


def test_bad_speed_entry_in_course_yml_names_file_and_field(root: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((root / "course.yml").read_text(encoding="utf-8"))
    raw["profiles"]["gpu"]["speed"] = {"autocast": "bf16", "turbo": True}
    broken = tmp_path / "course.yml"
    broken.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(CourseError, match=r"profiles\.gpu\.speed: unknown key 'turbo'") as info:
        load_course(broken)
    assert str(broken) in str(info.value)


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError, match="either a SpeedConfig or keywords"):
        with speed.use(SpeedConfig(), autocast="bf16"):
            pass
    with pytest.raises(ValueError, match=r"use\(\): unknown key 'fast'"):
        with speed.use(fast=True):
            pass
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        speed.prepare("resnet")  # type: ignore[arg-type]


def test_use_restores_the_previous_config() -> None:
    before = speed.current()
    with speed.use(BF16_CPU):
        with speed.use(autocast="off"):
            assert speed.current().autocast == "off"
        assert speed.current() == BF16_CPU
    assert speed.current() == before


# --- on a GPU --------------------------------------------------------------------------------------


def _syncs(fn: Any) -> int:
    """How many synchronising CUDA operations ``fn()`` performs."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in seen)


@pytest.mark.gpu
def test_cuda_matches_cpu_within_tolerance(digits: Any) -> None:
    """PGD robust accuracy on CUDA matches the CPU's within the tolerance, in float32 (kernels
    round differently, so a few gradient signs may flip) and with the gpu profile's features
    (bf16, channels_last, pinned transfers)."""
    model, x, y = digits
    cpu = lk.attacks.robust_accuracy(model, x, y, _pgd)
    gpu_model = copy.deepcopy(model).cuda()
    xc, yc = x.cuda(), y.cuda()
    plain = lk.attacks.robust_accuracy(gpu_model, xc, yc, _pgd)
    fast_config = SpeedConfig(autocast="bf16", channels_last=True, pin_memory=True)
    speed.prepare(gpu_model, fast_config)
    with speed.use(fast_config):
        fast = lk.attacks.robust_accuracy(gpu_model, xc, yc, _pgd)
    assert abs(plain - cpu) <= speed.ROBUST_ACCURACY_TOLERANCE
    assert abs(fast - cpu) <= speed.ROBUST_ACCURACY_TOLERANCE


@pytest.mark.gpu
def test_compiled_model_matches_eager(digits: Any) -> None:
    model, x, _ = digits
    eager = copy.deepcopy(model).cuda()
    compiled = speed.prepare(copy.deepcopy(model).cuda(), SpeedConfig(compile=True))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x.cuda()), eager(x.cuda()), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_training_attack_never_waits_on_the_host(digits: Any) -> None:
    """pgd_train_attack with pinned transfers runs with no host sync at all, CPU generator included."""
    model, x, y = digits
    gpu_model = copy.deepcopy(model).cuda()
    xc, yc = x.cuda(), y.cuda()
    with speed.use(autocast="bf16", pin_memory=True), gpu_model.unchecked():
        pgd_train_attack(gpu_model, xc, yc, eps=0.1, steps=2, generator=torch.Generator())  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            pgd_train_attack(gpu_model, xc, yc, eps=0.1, steps=10, generator=torch.Generator())
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_pgd_syncs_do_not_grow_with_steps(digits: Any) -> None:
    """labkit.attacks.pgd syncs only to validate its inputs: as often for 2 steps as for 20."""
    model, x, y = digits
    gpu_model = copy.deepcopy(model).cuda()
    xc, yc = x.cuda(), y.cuda()
    gen = torch.Generator(device="cuda")
    lk.attacks.pgd(gpu_model, xc, yc, eps=0.1, steps=2, generator=gen)  # warm-up
    short = _syncs(lambda: lk.attacks.pgd(gpu_model, xc, yc, eps=0.1, steps=2, generator=gen))
    long = _syncs(lambda: lk.attacks.pgd(gpu_model, xc, yc, eps=0.1, steps=20, generator=gen))
    assert long == short


@pytest.mark.gpu
def test_adversarial_training_syncs_once_per_epoch_not_per_batch() -> None:
    """With pinned transfers on, the host waits for the GPU per epoch, not per batch."""
    data = lk.data.load("digits", split="train", n=256)

    def run(batch_size: int) -> None:
        model = lk.models.build("digits-cnn", data).cuda()
        attack = partial(pgd_train_attack, eps=0.1, steps=2, generator=torch.Generator())
        adversarial_training(
            model, data, attack=attack, epochs=1, batch_size=batch_size, monitor_size=0, progress=False
        )

    with speed.use(autocast="bf16", pin_memory=True):
        run(128)  # warm-up
        few, many = _syncs(lambda: run(128)), _syncs(lambda: run(16))
    assert many == few
