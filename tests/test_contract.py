"""The lab model contract (LabModel)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import labkit as lk


def test_forward_gives_logits_and_normalises_inside() -> None:
    net = nn.Flatten()  # identity on 1x1x2 inputs: shows what the net receives
    model = lk.LabModel(net, input_shape=(1, 1, 2), num_classes=2, mean=0.5, std=0.25).eval()
    out = model(torch.tensor([[[[0.5, 1.0]]]]))
    assert torch.allclose(out, torch.tensor([[0.0, 2.0]]))


def test_per_channel_statistics() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    model = lk.LabModel(net, input_shape=(3, 2, 2), num_classes=3, mean=[0.1, 0.2, 0.3], std=[1, 2, 3])
    assert model.mean.shape == (1, 3, 1, 1)
    assert torch.allclose(model.std.flatten(), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="expected 1 or 3"):
        lk.LabModel(net, input_shape=(3, 2, 2), num_classes=3, mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="std must be positive"):
        lk.LabModel(net, input_shape=(3, 2, 2), num_classes=3, std=[1, 0, 1])


def test_rejects_out_of_range_nan_and_shape(tiny_model: lk.LabModel) -> None:
    with pytest.raises(ValueError, match="outside"):
        tiny_model(torch.full((1, 1, 2, 2), 255.0))
    with pytest.raises(ValueError, match="NaN"):
        tiny_model(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="expected \\(batch, 1, 2, 2\\)"):
        tiny_model(torch.rand(1, 3, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        tiny_model(torch.ones(1, 1, 2, 2, dtype=torch.int64))


def test_warns_in_train_mode_only(tiny_model: lk.LabModel) -> None:
    x = torch.rand(2, 1, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model(x)  # eval mode: no warning
    tiny_model.train()
    with pytest.warns(lk.TrainModeWarning, match="training mode"):
        tiny_model(x)


def test_unchecked_skips_validation_and_restores(tiny_model: lk.LabModel) -> None:
    with tiny_model.unchecked():
        tiny_model(torch.full((1, 1, 2, 2), 2.0))
    assert tiny_model.check_inputs
    with pytest.raises(ValueError):
        tiny_model(torch.full((1, 1, 2, 2), 2.0))


def test_wrapped_net_must_return_logits_of_right_shape() -> None:
    model = lk.LabModel(nn.Flatten(), input_shape=(1, 2, 2), num_classes=3).eval()
    with pytest.raises(ValueError, match=r"expected \(1, 3\) logits"):
        model(torch.rand(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (0, 2)}, "input_shape"),
        ({"num_classes": 1}, "num_classes"),
        ({"value_range": (1.0, 0.0)}, "value_range"),
        ({"class_names": ["a"]}, "class_names"),
    ],
)
def test_constructor_validation(kwargs: dict, match: str) -> None:
    args = {"input_shape": (1, 2, 2), "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        lk.LabModel(nn.Flatten(), **args)


def test_rejects_double_wrap_and_non_module(tiny_model: lk.LabModel) -> None:
    with pytest.raises(TypeError, match="already a LabModel"):
        lk.LabModel(tiny_model, input_shape=(1, 2, 2), num_classes=2)
    with pytest.raises(TypeError, match="nn.Module"):
        lk.LabModel(lambda x: x, input_shape=(1, 2, 2), num_classes=2)  # type: ignore[arg-type]


def test_predict_matches_argmax(tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    assert torch.equal(tiny_model.predict(x), y)


def test_state_dict_round_trip_keeps_normalisation() -> None:
    a = lk.LabModel(nn.Flatten(), input_shape=(1, 1, 2), num_classes=2, mean=0.3, std=0.2)
    b = lk.LabModel(nn.Flatten(), input_shape=(1, 1, 2), num_classes=2)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)


def test_rejects_a_dtype_the_model_does_not_compute_in(tiny_model: lk.LabModel) -> None:
    with pytest.raises(TypeError, match=r"dtype torch.float64 but the model computes in torch.float32"):
        tiny_model(torch.rand(2, 1, 2, 2, dtype=torch.float64))
    as_double = tiny_model.double()
    assert as_double(torch.rand(2, 1, 2, 2, dtype=torch.float64)).dtype == torch.float64
