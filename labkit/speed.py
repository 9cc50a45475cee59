"""Opt-in speed features for GPU workshops: mixed precision, ``channels_last``, compilation,
large batches and pinned-memory transfers.

Everything here is off unless a caller turns it on: a block under :func:`use`, or the whole
session through :func:`set_default`, which ``lk.active_profile()`` (the notebooks' setup call)
does with the profile's ``speed:`` settings from ``course.yml`` (the ``gpu`` profile enables the
useful ones). Nothing here reads a file or the environment, so what an attack computes does
not depend on the folder it is called from. With the features off, every function below is a
no-op and labkit computes exactly what it computed before. The features apply to CUDA tensors only, unless
``on_cpu: true`` (on a CPU, bfloat16 and ``channels_last`` rarely pay; the option exists so
the tests can check the results there).

==================  =========================================================  ==================
key                 effect                                                     where
==================  =========================================================  ==================
``autocast``        ``"bf16"`` or ``"fp16"``: forward passes under             attack steps,
                    :func:`torch.autocast`; logits are cast back to the        adversarial
                    input's dtype, inputs and perturbations stay float32       training
``channels_last``   convolution weights in NHWC layout (tensor cores)          :func:`prepare`
``compile``         :func:`torch.compile` of the wrapped network, in place     :func:`prepare`
``pin_memory``      host-to-device copies from pinned memory, without          batches and random
                    blocking the host                                          starts
``batch_size``      examples per forward pass when evaluating                  :func:`batch_size`,
                                                                               ``robust_accuracy``
==================  =========================================================  ==================

Tolerances. Mixed precision changes the last bits of every logit, so results are equal within
a tolerance, not bit for bit: on the course's models bfloat16 autocast agrees with float32 on
at least :data:`PREDICTION_AGREEMENT` of the predictions, and robust accuracy moves by at most
:data:`ROBUST_ACCURACY_TOLERANCE` (absolute). ``channels_last`` and ``pin_memory`` change no
result beyond float rounding (:data:`LOGIT_ATOL`). ``fp16`` training uses a gradient scaler,
which reads one flag from the GPU per step; ``bf16`` needs none and is the default of the
``gpu`` profile.

Examples
--------
>>> import labkit as lk
>>> current().enabled                                # off until a caller turns it on
False
>>> fast = SpeedConfig(autocast="bf16", channels_last=True, on_cpu=True)
>>> with use(fast):
...     current().autocast
'bf16'
>>> SpeedConfig.from_mapping({"autocast": "bf16", "complie": True})
Traceback (most recent call last):
...
ValueError: speed: unknown key 'complie'; expected keys among autocast, channels_last, compile, ...
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

__all__ = [
    "LOGIT_ATOL",
    "PREDICTION_AGREEMENT",
    "ROBUST_ACCURACY_TOLERANCE",
    "SpeedConfig",
    "autocast",
    "batch_size",
    "current",
    "logits",
    "prepare",
    "set_default",
    "to_device",
    "use",
]

PREDICTION_AGREEMENT = 0.99
"""Fraction of predictions that mixed precision must leave unchanged."""
ROBUST_ACCURACY_TOLERANCE = 0.03
"""Largest change in robust accuracy (absolute, a fraction) that mixed precision may cause."""
LOGIT_ATOL = 1e-4
"""Largest change in a logit that ``channels_last`` or pinned transfers may cause (rounding)."""

_AUTOCAST = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class SpeedConfig:
    """Which speed features are on; the default turns everything off.

    Parameters
    ----------
    autocast:
        ``"off"``, ``"bf16"`` or ``"fp16"``: mixed precision for forward passes in attacks and
        adversarial training.
    channels_last:
        Convert convolution weights to the NHWC layout in :func:`prepare`.
    compile:
        Compile the wrapped network with :func:`torch.compile` in :func:`prepare`.
    pin_memory:
        Copy batches and random starts to the GPU through pinned memory, asynchronously.
    batch_size:
        Examples per forward pass for evaluation (:func:`batch_size`); ``None`` keeps each
        function's own default.
    on_cpu:
        Apply ``autocast`` and ``channels_last`` to CPU tensors too (for tests and
        experiments; off, the features touch CUDA tensors only).
    """

    autocast: str = "off"
    channels_last: bool = False
    compile: bool = False
    pin_memory: bool = False
    batch_size: int | None = None
    on_cpu: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.autocast, str) or self.autocast not in _AUTOCAST:
            raise ValueError(
                f"autocast must be one of {', '.join(repr(k) for k in _AUTOCAST)}, got {self.autocast!r}"
            )
        for name in ("channels_last", "compile", "pin_memory", "on_cpu"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be true or false, got {value!r}")
        size = self.batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {size!r}")

    @classmethod
    def from_mapping(cls, raw: object, *, where: str = "speed") -> SpeedConfig:
        """Build a config from the ``speed:`` mapping of a profile; unknown keys raise.

        ``autocast: off`` (which YAML reads as ``false``) means ``"off"``.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping such as {{autocast: bf16}}, got {raw!r}")
        known = [f.name for f in fields(cls)]
        for key in raw:
            if key not in known:
                raise ValueError(f"{where}: unknown key {key!r}; expected keys among {', '.join(known)}")
        values: dict[str, Any] = dict(raw)
        if values.get("autocast") is False:
            values["autocast"] = "off"
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None

    @property
    def enabled(self) -> bool:
        """Whether any feature is on."""
        return self != SpeedConfig(on_cpu=self.on_cpu)

    def applies_to(self, device: torch.device | str) -> bool:
        """Whether the device-bound features (autocast, layout, pinning) act on ``device``."""
        kind = torch.device(device).type
        return kind == "cuda" or (kind == "cpu" and self.on_cpu)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or ``None`` when autocast is off."""
        return _AUTOCAST[self.autocast]


_OVERRIDE: contextvars.ContextVar[SpeedConfig | None] = contextvars.ContextVar("labkit_speed", default=None)
_DEFAULT = SpeedConfig()


def current() -> SpeedConfig:
    """The speed features in force: those of the innermost :func:`use` block, else the
    session's (:func:`set_default`; everything off unless a caller set it)."""
    override = _OVERRIDE.get()
    return _DEFAULT if override is None else override


def set_default(config: SpeedConfig | Mapping[str, Any] | None = None, **features: Any) -> SpeedConfig:
    """Turn speed features on (or off) for the rest of the session, outside any :func:`use` block.

    Takes what :func:`use` takes; ``set_default()`` turns everything off again. Returns the
    previous session setting, so a caller can put it back.

    Examples
    --------
    >>> before = set_default(autocast="bf16", on_cpu=True)
    >>> current().autocast
    'bf16'
    >>> _ = set_default(before)
    >>> current().enabled
    False
    """
    global _DEFAULT
    previous = _DEFAULT
    _DEFAULT = _chosen(config, features, where="set_default()")
    return previous


def _chosen(
    config: SpeedConfig | Mapping[str, Any] | None, features: dict[str, Any], *, where: str
) -> SpeedConfig:
    if isinstance(config, SpeedConfig):
        if features:
            raise TypeError("pass either a SpeedConfig or keywords, not both")
        return config
    return SpeedConfig.from_mapping({**dict(config or {}), **features}, where=where)


@contextlib.contextmanager
def use(config: SpeedConfig | Mapping[str, Any] | None = None, **features: Any) -> Iterator[SpeedConfig]:
    """Run a block with the given speed features, whatever the profile says.

    Pass a :class:`SpeedConfig`, a mapping like a profile's ``speed:`` entry, or keywords.

    Examples
    --------
    >>> with use(autocast="bf16", on_cpu=True) as fast:
    ...     fast.amp_dtype
    torch.bfloat16
    """
    chosen = _chosen(config, features, where="use()")
    token = _OVERRIDE.set(chosen)
    try:
        yield chosen
    finally:
        _OVERRIDE.reset(token)


def autocast(
    device: torch.device | str, config: SpeedConfig | None = None
) -> contextlib.AbstractContextManager[Any]:
    """:func:`torch.autocast` for ``device`` when the config turns it on there, else a no-op."""
    cfg = config if config is not None else current()
    dtype = cfg.amp_dtype
    if dtype is None or not cfg.applies_to(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def logits(model: nn.Module, x: torch.Tensor, config: SpeedConfig | None = None) -> torch.Tensor:
    """``model(x)``, under autocast when the config turns it on, with logits in ``x``'s dtype.

    With autocast off this is exactly ``model(x)``.
    """
    cfg = config if config is not None else current()
    if cfg.amp_dtype is None or not cfg.applies_to(x.device):
        return model(x)
    with torch.autocast(device_type=x.device.type, dtype=cfg.amp_dtype):
        out = model(x)
    return out.to(x.dtype) if x.is_floating_point() else out.float()


def to_device(t: torch.Tensor, device: torch.device | str, config: SpeedConfig | None = None) -> torch.Tensor:
    """``t.to(device)``; from pinned memory and without blocking the host when ``pin_memory``
    is on and ``t`` goes from the CPU to a GPU. The values are the same either way."""
    target = torch.device(device)
    if t.device == target or t.device.type != "cpu" or target.type != "cuda":
        return t.to(target)
    cfg = config if config is not None else current()
    if not cfg.pin_memory:
        return t.to(target)
    source = t if t.is_pinned() else t.pin_memory()
    return source.to(target, non_blocking=True)


def batch_size(default: int, device: torch.device | str, config: SpeedConfig | None = None) -> int:
    """Examples per forward pass: the config's ``batch_size`` where it applies, else ``default``.

    Examples
    --------
    >>> batch_size(256, "cpu", SpeedConfig(batch_size=4096))
    256
    >>> batch_size(256, "cuda", SpeedConfig(batch_size=4096))
    4096
    """
    cfg = config if config is not None else current()
    if cfg.batch_size is None or not cfg.applies_to(device):
        return default
    return cfg.batch_size


def prepare(model: nn.Module, config: SpeedConfig | None = None) -> nn.Module:
    """Make a model faster in place: ``channels_last`` weights and a compiled network.

    With the features off (the default under the ``ci`` and ``laptop`` profiles) the model is
    returned untouched. For a :class:`~labkit.LabModel` only the wrapped network is compiled,
    so the input checks and the state-dict keys stay as they were; weights saved from a
    prepared model load into an unprepared one. Returns ``model`` for chaining.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    >>> model = lk.LabModel(net, input_shape=(3, 8, 8), num_classes=2).eval()
    >>> _ = model(torch.rand(1, 3, 8, 8))
    >>> fast = prepare(model, SpeedConfig(channels_last=True, on_cpu=True))
    >>> fast is model, model.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    (True, True)
    """
    from labkit.contract import LabModel

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    cfg = config if config is not None else current()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if not cfg.applies_to(device):
        return model
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.compile:
        target = model.net if isinstance(model, LabModel) else model
        target.compile()
    return model
