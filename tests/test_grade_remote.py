"""The checker's side of grading without bubblewrap: which cells it trusts, and what crosses
from the learner's kernel (a plain ipykernel here) into the checker (this process).

Every value that comes back must be a checker-native object or one of the checker's proxies:
never an object whose comparisons or truth value run learner code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
import torch

import labkit as lk
from labkit.course import checker_side, codec, remote
from labkit.course.cellplan import names_of, plan_cells

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_grade import NOTEBOOK, ROOT, SLUG


def _cell(source: str, **meta: Any) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if meta:
        cell.metadata["nbgrader"] = meta
    return cell


# --------------------------------------------------------------------------------------------
# Which cells the checker runs


@pytest.mark.parametrize(
    ("source", "stored"),
    [
        ("x = 1", {"x"}),
        ("x += 1", {"x"}),
        ("del x", {"x"}),
        ("import numpy as np, os.path", {"np", "os"}),
        ("from math import pi as tau", {"tau"}),
        ("def f():\n    global g\n    g = 1", {"f", "g"}),
        ("class C:\n    y = 1", {"C"}),
        ("for i, j in []:\n    pass", {"i", "j"}),
        ("with open('f') as fh:\n    pass", {"fh"}),
        ("if (n := 3):\n    pass", {"n"}),
        ("[k for k in range(3)]", set()),
        ("def f(a):\n    b = a\n    return b", {"f"}),
    ],
)
def test_names_a_cell_assigns(source: str, stored: set[str]) -> None:
    assert names_of(source)[1] == stored


def test_learner_names_spread_through_the_cells_that_read_them() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import torch\nmodel = 1\nseed = 0"),
        _cell("def solve(v):\n    return v\nhelper = 2", solution=True, grade=False, grade_id="s"),
        _cell("result = solve(model)"),  # reads a learner name: a learner cell
        _cell("doubled = result * 2"),  # reads one in turn
        _cell("seed = 1"),  # reassigned by a trusted cell: the checker's own again
        _cell("figure = plot(model)"),  # a figure no test reads: the checker skips it
        _cell("assert solve(doubled) == seed and model", grade=True, solution=False, grade_id="t", points=1),
    ]
    plan = plan_cells(nb)
    step = plan.tests["t"]
    assert step.learner_names == ["doubled", "solve"]
    assert step.trusted_before == ["import torch\nmodel = 1\nseed = 0", "seed = 1"]
    assert "model" in step.shared_names and "result" not in step.shared_names
    assert plan.learner >= {"solve", "helper", "result", "doubled"}


def test_a_solution_cells_imports_are_the_checkers_own() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell(
            "import base64, json as js\nfrom math import pi\nimport os\nos = 3\ndef f(b):\n    return b",
            solution=True,
        ),
        _cell("text = base64.b64encode(b'x')", grade=True, solution=False, grade_id="t", points=1),
        _cell("assert f(js.dumps(pi)) and os", grade=True, solution=False, grade_id="u", points=1),
    ]
    plan = plan_cells(nb)
    imports = ["import base64", "import json as js", "from math import pi"]
    assert plan.tests["t"].learner_names == [] and plan.tests["t"].trusted_before == imports
    assert plan.tests["u"].learner_names == ["f", "os"], "a name the cell also assigns stays the learner's"


def test_lesson_00_plan_binds_only_the_exercises() -> None:
    plan = plan_cells(nbformat.read(ROOT / "lessons" / SLUG / NOTEBOOK, as_version=4))
    assert plan.tests["check_batch_tests"].learner_names == ["check_batch"]
    assert plan.tests["wrap_tests"].learner_names == ["wrap"]
    assert set(plan.tests["quiz_format"].learner_names) == {"q1", "q2", "q3", "q4", "q5"}
    assert "bare" in plan.tests["wrap_tests"].shared_names
    # the checker never runs a solution cell, released or not
    every = [src for step in plan.tests.values() for src in step.trusted_before]
    assert not any("def check_batch" in src or "q1 = None" in src for src in every)


# --------------------------------------------------------------------------------------------
# The codec alone


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        2.5,
        float("inf"),
        "text",
        [1, [2, "x"]],
        (1, (2.0,)),
        {"a": {"b": None}},
        {1, 2},
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.float32(1.5),
        torch.rand(2, 3),
        torch.tensor([1, 2], dtype=torch.uint8),
        torch.float64,
    ],
)
def test_data_crosses_as_native_values(value: Any) -> None:
    back = codec.decode(codec.encode(value, None), None)
    assert type(back) is type(value)
    if isinstance(value, torch.Tensor):
        assert torch.equal(back, value)
    elif isinstance(value, np.ndarray):
        assert np.array_equal(back, value) and back.dtype == value.dtype
    else:
        assert back == value


def test_what_is_not_data_does_not_cross_as_data() -> None:
    class Yes(float):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = float.__hash__

    for bad in (Yes(1.0), np.array([object()]), {1: "int key"}, lambda: 0):
        with pytest.raises(codec.CodecError):
            codec.encode(bad, None)
    deep: list[Any] = []
    for _ in range(codec.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(codec.CodecError, match="deeper"):
        codec.encode(deep, None)
    # an object array in the payload is refused by numpy itself (allow_pickle=False)
    import base64
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        codec.decode({"$npy": base64.b64encode(buf.getvalue()).decode()}, None)


def test_modules_of_trusted_classes_are_rebuilt_with_the_receivers_code() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model = lk.LabModel(net, input_shape=(1, 8, 8), num_classes=10, mean=0.3, std=0.4).eval()
    desc = codec.describe_module(model, codec.Budget())
    assert desc is not None
    copy = codec.rebuild_module(desc)
    assert type(copy) is lk.LabModel and not copy.training
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(copy(x), model(x))
    with pytest.raises(ValueError):
        copy(torch.full((1, 1, 8, 8), 16.0))  # the checker's own input checks

    class Mine(torch.nn.Module):  # a learner's class: never rebuilt
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    assert codec.describe_module(Mine(), codec.Budget()) is None
    hooked = torch.nn.Linear(2, 2)
    hooked.register_forward_hook(lambda *a: None)
    assert codec.describe_module(hooked, codec.Budget()) is None
    forged = dict(desc, **{"$module": "builtins:object"})
    with pytest.raises(codec.CodecError):
        codec.rebuild_module(forged)


@pytest.mark.parametrize(
    ("mro", "expected"),
    [
        (["ValueError"], ValueError),
        (["__main__.ShapeError", "ValueError", "Exception"], ValueError),
        (["__main__.U", "AssertionError", "ValueError", "TypeError"], AssertionError),
        (["__main__.Odd", "Exception"], remote.RemoteError),
        (["labkit.course.answers.AnswerKeyError", "ValueError"], lk.course.answers.AnswerKeyError),
    ],
)
def test_learner_exceptions_become_allowlisted_checker_exceptions(mro: list[str], expected: type) -> None:
    err = codec.reraise({"type": mro[0], "bases": mro[1:], "message": "x" * 5000})
    assert type(err) is expected
    assert len(str(err)) <= codec.MESSAGE_CHARS + 40


# --------------------------------------------------------------------------------------------
# A learner kernel and the checker's proxies


LEARNER = """
import torch, numpy as np
import labkit as lk
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
def same(x):
    return x
def scale_in_place(x):
    x.mul_(2)
    return None
def picky(x):
    if x < 0:
        raise ValueError("negative")
    return x
class Universal(AssertionError, ValueError, TypeError):
    pass
def universal():
    raise Universal("every error")
class Yes(float):
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__
def yes():
    return Yes(1.0)
class Square(torch.nn.Module):
    def forward(self, x):
        return x * x
def custom():
    return Square()
class Reseeding(torch.nn.Module):
    def forward(self, x):
        torch.manual_seed(123)
        return x * 1
def reseeding():
    return Reseeding()
def linear():
    return torch.nn.Linear(4, 2)
def mode(m):
    m.train()
    return m.training
def draw():
    return torch.rand(3)
def reseed(seed):
    torch.manual_seed(seed)
def draw_with(g):
    return torch.rand(2, generator=g)
def sweep(attack, model, x, y, eps_values):
    return [attack(model, x, y, eps=eps) for eps in eps_values]
def each(attack, models, x, y):
    return [attack(m, x, y) for m in models.values()]
def read(obj, name):
    return getattr(obj, name)
def waits(api, x):
    try:
        api(x)
    except lk.serving.RateLimitExceeded as err:
        return err.retry_after
    return None
def keep_clock(clock):
    global _clock
    _clock = clock
def tick():
    return _clock() + _clock()
def doubled(b):
    return b + b
def make_scope():
    return lk.redteam.Scope(techniques=("transfer",), query_budget=100, max_eps=0.1)
def message():
    return lk.genai.Message("user", "hello")
import dataclasses, time
@dataclasses.dataclass(frozen=True)
class PosingScope:
    techniques: tuple = ("transfer",)
    query_budget: int = 10
    max_eps: float = 2.0
PosingScope.__module__, PosingScope.__qualname__ = "labkit.redteam.scope", "Scope"
def posing_scope():
    return PosingScope()
_ticks = [0]
def slow(seconds):
    for _ in range(int(seconds * 20)):
        time.sleep(0.05)
        _ticks[0] += 1
    return seconds
def ticks():
    return _ticks[0]
"""


@pytest.fixture(scope="module")
def learner() -> Iterator[dict[str, Any]]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(LEARNER, timeout=120, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok"
        ns: dict[str, Any] = {}
        saved = (checker_side.user_ns, list(checker_side._PEER))
        checker_side.user_ns = lambda: ns
        checker_side._PEER[:] = [remote.Peer(km.connection_file, 30)]
        ns["_kc"] = kc
        ns["_cf"] = km.connection_file
        ns["_km"] = km
        ns["model"] = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        names = [
            "same",
            "scale_in_place",
            "picky",
            "universal",
            "yes",
            "custom",
            "linear",
            "mode",
            "draw",
            "draw_with",
            "reseed",
            "reseeding",
            "sweep",
            "each",
            "read",
            "waits",
            "keep_clock",
            "tick",
            "doubled",
            "make_scope",
            "message",
            "posing_scope",
            "slow",
            "ticks",
        ]
        assert remote.bind([*names, "missing"], ["model"]) == ""
        assert "missing" not in ns
        yield ns
    finally:
        checker_side.user_ns, checker_side._PEER[:] = saved[0], saved[1]
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_calls_return_checker_data_and_keep_identity(learner: dict[str, Any]) -> None:
    x = torch.rand(2, 4)
    assert learner["same"](x) is x
    assert learner["same"]([1, "a"]) == [1, "a"]
    y = torch.ones(3)
    assert learner["scale_in_place"](y) is None
    assert torch.equal(y, torch.full((3,), 2.0)), "an in-place change by learner code shows in the checker"
    assert learner["picky"](3) == 3
    with pytest.raises(ValueError, match="negative"):
        learner["picky"](-1)
    lk.course.expect_raises(ValueError, learner["picky"], -1)


def test_learner_values_never_run_learner_code_in_the_checker(learner: dict[str, Any]) -> None:
    with pytest.raises(AssertionError) as caught:
        learner["universal"]()
    assert type(caught.value) is AssertionError  # not a ValueError or a TypeError as well
    value = learner["yes"]()
    assert not isinstance(value, float)
    assert value != 1.0
    with pytest.raises(TypeError, match="truth value"):
        bool(value)


def test_trusted_objects_go_by_reference_and_changes_come_back(learner: dict[str, Any]) -> None:
    model = learner["model"]
    model.eval()
    assert learner["mode"](model) is True
    assert model.training, "the learner's mode change of the shared model shows in the checker"
    local = torch.nn.Linear(2, 2).eval()  # made by a test: crosses by value
    assert learner["mode"](local) is True and local.training


def test_modules_come_back_rebuilt_or_as_remote_modules(learner: dict[str, Any]) -> None:
    linear = learner["linear"]()
    assert type(linear) is torch.nn.Linear
    square = learner["custom"]()
    assert isinstance(square, torch.nn.Module) and not isinstance(square, remote.RemoteObject)
    x = torch.rand(3, 4, requires_grad=True)
    out = square(x)
    assert torch.allclose(out, x * x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(grad, 2 * x), "the learner kernel's vector-Jacobian product"


def test_random_state_follows_the_checker(learner: dict[str, Any]) -> None:
    torch.manual_seed(7)
    first = learner["draw"]()
    after_first = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(learner["draw"](), first), "a seed set in the checker governs learner code"
    assert torch.equal(torch.rand(1), after_first), (
        "and the checker's draws after the call are the same again"
    )
    torch.manual_seed(7)
    untouched = torch.rand(1)
    torch.manual_seed(7)
    learner["same"](1)
    assert torch.equal(torch.rand(1), untouched), "a call that draws nothing leaves the checker's state alone"


def test_learner_code_cannot_choose_the_checkers_later_draws(learner: dict[str, Any]) -> None:
    torch.manual_seed(123)
    chosen = torch.rand(4)  # what the checker would draw next if it took the learner's state
    torch.manual_seed(5)
    before = torch.rand(4)
    torch.manual_seed(5)
    learner["reseed"](123)
    after = torch.rand(4)
    assert not torch.equal(after, chosen), "learner code chose the random data a test draws after calling it"
    assert not torch.equal(after, before), "a call that moved the learner's generator moves the checker's too"
    torch.manual_seed(5)
    learner["reseed"](123)
    assert torch.equal(torch.rand(4), after), "the same call from the same state gives the same later draws"
    module = learner["reseeding"]()  # a module the checker cannot rebuild: its forward runs remotely
    torch.manual_seed(5)
    module(torch.rand(2, 3))
    assert not torch.equal(torch.rand(4), chosen), (
        "a learner module's forward chose the checker's later draws"
    )


def test_generators_cross_and_advance_in_the_checker(learner: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(3)
    first, second = learner["draw_with"](g), learner["draw_with"](g)
    local = torch.Generator().manual_seed(3)
    assert torch.equal(first, torch.rand(2, generator=local))
    assert torch.equal(second, torch.rand(2, generator=local))
    assert torch.equal(g.get_state(), local.get_state())


def test_a_lying_server_only_changes_what_learner_code_returns(learner: dict[str, Any]) -> None:
    kc = learner["_kc"]
    lie = (
        "import json, labkit.course.learner_side as _r\n"
        "_real = _r.serve\n"
        "_r.serve = lambda req: json.dumps({'ok': {'value': {'$arg': 'a9'}, 'changed': {}}})\n"
    )
    assert kc.execute_interactive(lie, timeout=60, output_hook=lambda m: None)["content"]["status"] == "ok"
    try:
        with pytest.raises(remote.RemoteError, match="not passed"):
            learner["same"](1)
    finally:
        kc.execute_interactive("_r.serve = _real", timeout=60, output_hook=lambda m: None)
    assert learner["picky"](2) == 2


# --------------------------------------------------------------------------------------------
# What the checker hands to learner code: callables and objects that stay in the checker


def test_a_tests_callables_run_in_the_checker_when_learner_code_calls_them(learner: dict[str, Any]) -> None:
    seen: list[float] = []

    def recording(model: Any, x: torch.Tensor, y: Any, *, eps: float) -> torch.Tensor:
        seen.append(eps)
        assert model is learner["model"], "the shared model comes back as the checker's own"
        return x + eps

    x = torch.zeros(2, 4)
    out = learner["sweep"](recording, learner["model"], x, None, [0.0, 0.5])
    assert seen == [0.0, 0.5], "the checker's closure ran, in the checker, once per call"
    assert torch.equal(out[1], x + 0.5)
    # a partial of a labkit attack with a generator runs here, on the checker's generator
    g = torch.Generator().manual_seed(0)
    model = lk.LabModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), input_shape=(4,), num_classes=3
    ).eval()
    noisy = partial(lk.attacks.pgd, steps=2, generator=g)
    state = g.get_state()
    xs, ys = torch.rand(3, 4), torch.tensor([0, 1, 2])
    adv = learner["sweep"](noisy, model, xs, ys, [0.1])[0]
    assert (adv - xs).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(g.get_state(), state), "the checker's generator advanced"


def test_objects_nested_in_arguments_come_back_as_the_checkers_own(learner: dict[str, Any]) -> None:
    members = {"a": torch.nn.Linear(4, 3), "b": torch.nn.Linear(4, 3)}
    calls: list[Any] = []

    def counting(m: Any, x: torch.Tensor, y: Any) -> torch.Tensor:
        calls.append(m)
        return x

    learner["each"](counting, members, torch.rand(2, 4), None)
    assert calls == list(members.values()) and all(
        a is b for a, b in zip(calls, members.values(), strict=True)
    )


def test_callbacks_nest_and_outlive_the_call_that_passed_them(learner: dict[str, Any]) -> None:
    same = learner["same"]
    assert learner["sweep"](lambda m, x, y, *, eps: same(x) * eps, None, torch.ones(2), None, [2.0])[
        0
    ].tolist() == [
        2.0,
        2.0,
    ], "a checker callable may call learner code in turn"

    class Clock:
        def __init__(self) -> None:
            self.now = 0.0

        def __call__(self) -> float:
            self.now += 1.0
            return self.now

    Clock.__module__ = "__main__"  # where a test cell's class lives in the checker kernel
    clock = Clock()
    assert learner["keep_clock"](clock) is None
    assert learner["tick"]() == 3.0 and clock.now == 2.0, "a stored callable is called back in a later call"


def test_checker_objects_show_learner_code_public_data_only(learner: dict[str, Any]) -> None:
    model = lk.LabModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), input_shape=(4,), num_classes=3
    ).eval()
    api = lk.serving.PredictionAPI(model, output="label", query_budget=7, log=False)
    assert learner["read"](api, "queries_left") == 7
    assert learner["read"](api, "output") == "label"

    def secret_holder() -> None:
        return None

    for name in ("__globals__", "_model", "__dict__"):
        with pytest.raises(AttributeError):
            learner["read"](secret_holder if name == "__globals__" else api, name)
    with pytest.raises(TypeError, match="cannot read"):
        learner["read"](partial(torch.rand, 2), "func")  # a function the test did not hand over
    # a labkit exception raised in the checker reaches learner code as itself, with its data
    clock_now = [0.0]
    paced = lk.serving.PredictionAPI(
        model, output="label", rate_limit=1.0, burst=2, clock=lambda: clock_now[0], log=False
    )
    assert learner["waits"](paced, torch.rand(2, 4)) is None
    wait = learner["waits"](paced, torch.rand(2, 4))
    assert isinstance(wait, float) and wait > 0, "learner code caught RateLimitExceeded and read retry_after"
    with pytest.raises(TypeError, match="cannot pass"):
        learner["same"](sys)  # a Python module never crosses


def test_a_forged_callback_runs_nothing(learner: dict[str, Any]) -> None:
    peer = remote.peer()
    ran: list[int] = []
    peer.export(lambda: ran.append(1))
    for cb in (
        {"op": "call", "handle": 10_000, "args": [], "kwargs": {}},
        {"op": "getattr", "handle": 1, "args": ["__globals__"], "kwargs": {}},
        {"op": "setattr", "handle": 1, "args": ["x", 1], "kwargs": {}},
        "not a request",
    ):
        reply = peer._callback({"callback": cb, "call": 1}, {})
        assert "raise" in reply and "value" not in reply
    assert ran == []
    with pytest.raises(remote.RemoteError, match="never passed"):
        peer.decode_result({"$exported": 10_000}, {})


def test_bytes_cross_as_data_within_the_size_cap(
    learner: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert learner["doubled"](b"ab\x00") == b"ab\x00ab\x00"
    assert codec.decode(codec.encode(bytearray(b"xy"), None), None) == bytearray(b"xy")
    with pytest.raises(codec.CodecError, match="not base64"):
        codec.decode({"$bytes": "***"}, None)
    monkeypatch.setattr(codec, "MAX_BYTES", 1024)
    with pytest.raises(codec.CodecError, match="larger"):
        codec.encode(b"x" * 2048, None)
    with pytest.raises(codec.CodecError, match="larger"):
        codec.decode({"$bytes": "A" * 4096}, None)


def test_labkit_dataclasses_are_rebuilt_with_the_checkers_class(learner: dict[str, Any]) -> None:
    scope = learner["make_scope"]()
    assert type(scope) is lk.redteam.Scope and scope.allows("transfer") and not scope.allows("white_box")
    assert type(learner["message"]()) is lk.genai.Message
    posing = learner["posing_scope"]()
    assert isinstance(posing, remote.RemoteObject), "a learner class posing as a labkit class stays a proxy"


@pytest.mark.parametrize(
    ("tag", "match"),
    [
        (
            {
                "$dataclass": "labkit.redteam.scope:Scope",
                "fields": {"techniques": ["transfer"], "query_budget": 5, "evil": 1},
            },
            "does not have",
        ),
        (
            {
                "$dataclass": "labkit.redteam.scope:Scope",
                "fields": {"techniques": ["transfer"], "query_budget": 5, "max_eps": 9.0},
            },
            "refuses",
        ),
        (
            {
                "$dataclass": "labkit.redteam.scope:Scope",
                "fields": {"techniques": ["rm -rf"], "query_budget": 5},
            },
            "refuses",
        ),
        ({"$dataclass": "builtins:object", "fields": {}}, "not a labkit"),
        ({"$dataclass": "labkit.serving.api:PredictionAPI", "fields": {}}, "not a labkit dataclass"),
        ({"$dataclass": "labkit.redteam.scope:Scope.__init__.__globals__", "fields": {}}, "not a public"),
        ({"$dataclass": "labkit.course.answers:AnswerKey", "fields": {}}, "may cross"),
    ],
)
def test_forged_labkit_objects_are_refused(tag: dict[str, Any], match: str) -> None:
    with pytest.raises(codec.CodecError, match=match):
        codec.decode(tag, None)


def test_a_learner_call_that_never_returns_times_out_and_stops_when_interrupted(
    learner: dict[str, Any],
) -> None:
    import time

    impatient = remote.Peer(learner["_cf"], 1)
    handle = object.__getattribute__(learner["slow"], "_handle")
    with pytest.raises(remote.RemoteError, match="did not answer within"):
        impatient.call(handle, (600,), {})
    learner["_km"].interrupt_kernel()  # what the grader does to a cell past its time
    time.sleep(1.0)
    before = learner["ticks"]()
    time.sleep(0.5)
    assert learner["ticks"]() == before, "the interrupted learner code no longer runs"
    assert learner["slow"](0) == 0, "the kernel answers again"


def test_modules_named_in_a_modules_attributes_are_rebuilt_in_place() -> None:
    inner = torch.nn.Linear(4, 3)
    outer = torch.nn.Sequential(inner)
    vars(outer)["extra"] = {"base": inner, "loose": torch.nn.ReLU(), "n": 2}  # like a wrapper's meta
    desc = codec.describe_module(outer, codec.Budget())
    assert desc is not None
    copy = codec.rebuild_module(desc)
    assert copy.extra["base"] is copy[0], "a submodule named in an attribute is the rebuilt submodule"
    assert type(copy.extra["loose"]) is torch.nn.ReLU and copy.extra["n"] == 2
    forged = {**desc, "attrs": {"extra": {"$dict": {"base": {"$submodule": "7.weight"}}}}}
    with pytest.raises(codec.CodecError, match="no submodule"):
        codec.rebuild_module(forged)
    vars(outer)["extra"] = {"f": lambda v: v}  # a function in an attribute: the module does not cross as data
    assert codec.describe_module(outer, codec.Budget()) is None


def test_labkit_named_tuples_cross_as_themselves() -> None:
    answer = lk.serving.api.TopK(torch.rand(2, 3), torch.tensor([[1, 0, 2], [2, 1, 0]]))
    back = codec.decode(codec.encode(answer, None), None)
    assert type(back) is lk.serving.api.TopK and torch.equal(back.classes, answer.classes)
    with pytest.raises(codec.CodecError, match="does not have"):
        codec.decode(
            {"$dataclass": "labkit.serving.api:TopK", "fields": {"scores": 1, "classes": 2, "x": 3}}, None
        )


# --------------------------------------------------------------------------------------------
# A motivated candidate's learner kernel against the call-back surface


def _in_learner(learner: dict[str, Any], code: str) -> None:
    """Run ``code`` in the learner's kernel (what a submission's own cells may do there)."""
    reply = learner["_kc"].execute_interactive(code, timeout=60, output_hook=lambda m: None)
    assert reply["content"]["status"] == "ok", reply["content"]


def test_an_object_of_an_earlier_test_cell_is_not_called_back(learner: dict[str, Any]) -> None:
    ran: list[int] = []

    def hidden_helper() -> int:  # a test's callable, which may close over what the test keeps
        ran.append(1)
        return 21

    assert learner["keep_clock"](hidden_helper) is None
    assert learner["tick"]() == 42 and len(ran) == 2, "within its test cell the object is called back"
    assert remote.bind(["tick", "keep_clock"], ["model"]) == ""  # the grader moves to the next test cell
    with pytest.raises(remote.RemoteError, match="earlier test"):
        learner["tick"]()
    _in_learner(
        learner,
        "import labkit.course.learner_side as _r\ndef forged():\n    return _r._CheckerObject(1, 'x')()",
    )
    with pytest.raises(remote.RemoteError, match="earlier test"):
        remote.peer().get("forged")()
    assert len(ran) == 2, "the kept and the forged handle ran nothing in the checker"


def test_learner_code_cannot_call_back_while_the_grader_reads_a_name(learner: dict[str, Any]) -> None:
    ran: list[int] = []
    handle = remote.peer().export(lambda: ran.append(1))["$checker"]
    torch.manual_seed(5)
    state = torch.get_rng_state()
    _in_learner(
        learner,
        "import json, torch, labkit.course.codec as _c, labkit.course.learner_side as _r\n"
        "torch.manual_seed(123)\n"
        "import labkit.course.rng as _rng\n"
        "_chosen = _c.encode(_rng.rng_state(), None)\n"
        "_real = _r.serve\n"
        "def _sneaky(request):\n"
        "    req = json.loads(request)\n"
        "    if req.get('op') == 'get' and req.get('name') == 'sneak':\n"
        f"        cb = {{'op': 'call', 'handle': {handle}, 'args': [], 'kwargs': {{}}, 'rng': _chosen}}\n"
        "        return json.dumps({'callback': cb, 'call': 10**9})\n"
        "    if req.get('op') == 'resume' and req.get('call') == 10**9:\n"
        "        return json.dumps({'ok': 'read'})\n"
        "    return _real(request)\n"
        "_r.serve = _sneaky\n",
    )
    try:
        assert remote.peer().get("sneak") == "read"
    finally:
        _in_learner(learner, "_r.serve = _real")
    assert ran == [], "reading a name ran a test's callable"
    assert torch.equal(torch.get_rng_state(), state), "reading a name set the checker's random state"


def test_tensors_are_not_widened_past_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    small = codec.encode(torch.zeros(1024, dtype=torch.uint8), None)
    monkeypatch.setattr(codec, "MAX_BYTES", 4096)
    with pytest.raises(codec.CodecError, match="uint8.*complex128"):
        codec.decode({**small, "dtype": "complex128"}, None)  # 1 KiB of bytes declared 16 KiB of numbers
    with pytest.raises(codec.CodecError, match="uint8.*int64"):
        codec.decode({"$generator": {**small, "dtype": "int64"}, "device": "cpu"}, None)
    wide = codec.encode(torch.zeros(16, dtype=torch.bfloat16), None)
    assert codec.decode(wide, None).dtype == torch.bfloat16, "bfloat16 still crosses (as float32 on the wire)"


def test_a_learner_stop_iteration_does_not_end_the_checkers_loop(learner: dict[str, Any]) -> None:
    _in_learner(learner, "def stops(x):\n    raise StopIteration")
    stops = remote.peer().get("stops")
    with pytest.raises(remote.RemoteError, match="StopIteration"):
        all(map(stops, [1, 2, 3]))  # would be True: map() would end quietly at the first case
    _in_learner(learner, "class Halt(ValueError, StopIteration):\n    pass\ndef halts(x):\n    raise Halt()")
    with pytest.raises(ValueError):
        list(map(remote.peer().get("halts"), [1]))


def test_calls_back_and_forth_are_nested_only_so_deep(learner: dict[str, Any]) -> None:
    same = learner["same"]
    _in_learner(learner, "def bounce(cb, n):\n    return cb(n)")
    bounce = remote.peer().get("bounce")
    levels: list[int] = []

    def again(n: int) -> Any:
        levels.append(n)
        return bounce(again, n + 1)

    with pytest.raises(remote.RemoteError, match="nested"):
        bounce(again, 0)
    assert 2 <= len(levels) <= checker_side.MAX_NESTING
    assert same(3) == 3, "the kernels answer again"


def test_decoding_counts_items_as_encoding_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_ITEMS", 1000)
    assert codec.decode([0] * 999, None) == [0] * 999
    for flood in ([0] * 2000, {"$tuple": [[0]] * 600}, {"$dict": {str(i): i for i in range(2000)}}):
        # a sender that skips the encoder's cap (a learner's own server): refused, not decoded
        with pytest.raises(codec.CodecError, match="1000 items"):
            codec.decode(flood, None)


def test_learner_code_cannot_erase_what_a_tests_object_counted(learner: dict[str, Any]) -> None:
    _in_learner(
        learner, "def spend_then_hide(api, x):\n    for _ in range(4):\n        api(x)\n    api.reset()"
    )
    model = lk.LabModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), input_shape=(4,), num_classes=3
    ).eval()
    api = lk.serving.PredictionAPI(model, output="label", query_budget=10, log=False)
    with pytest.raises(TypeError, match="cannot call the grader's PredictionAPI.reset"):
        remote.peer().get("spend_then_hide")(api, torch.rand(2, 4))
    assert api.queries_used == 8, "the 8 rows learner code sent stay counted"


def test_a_tests_partial_is_called_not_read(learner: dict[str, Any]) -> None:
    def judge(answer: Any, *, expected: Any) -> bool:
        return bool(answer == expected)

    graded = partial(judge, expected="the hidden answer")
    for name in ("keywords", "args", "func"):
        with pytest.raises(TypeError, match="cannot read"):
            learner["read"](graded, name)
    _in_learner(learner, "def ask(f, v):\n    return f(v)")
    assert remote.peer().get("ask")(graded, "a guess") is False, "calling it still works"


def test_learner_threads_cannot_call_back_after_the_call(learner: dict[str, Any]) -> None:
    ran: list[int] = []
    _in_learner(
        learner,
        "import threading, time\n"
        "_late = []\n"
        "def leave_behind(cb):\n"
        "    def later():\n"
        "        time.sleep(0.3)\n"
        "        try:\n"
        "            cb()\n"
        "            _late.append('ran')\n"
        "        except RuntimeError as err:\n"
        "            _late.append(str(err))\n"
        "    threading.Thread(target=later, daemon=True).start()\n"
        "def late():\n"
        "    return _late\n",
    )
    assert remote.peer().get("leave_behind")(lambda: ran.append(1)) is None
    import time

    time.sleep(1.0)
    assert remote.peer().get("late")() == [
        "an object of the grader's can only be used while the grader calls learner code"
    ]
    assert ran == []


def test_a_learner_objects_length_is_a_plain_int(learner: dict[str, Any]) -> None:
    _in_learner(
        learner,
        "class Lies:\n    def __init__(self, n):\n        self.n = n\n    def __len__(self):\n        return self.n\n"
        "def lies(n):\n    return Lies(n)\n",
    )
    lies = remote.peer().get("lies")
    assert len(lies(3)) == 3
    with pytest.raises(OverflowError):
        len(lies(2**70))  # a list(...) over it would never end
    with pytest.raises(ValueError):
        len(lies(-1))
