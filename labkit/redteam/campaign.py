"""A red-team campaign: run the probes a scope allows, log every attempt, collect findings."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch

from labkit import atlas
from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.redteam import probes as _probes
from labkit.redteam._context import NotApplicable, Observation
from labkit.redteam.findings import (
    RECOMMENDATIONS,
    SEVERITIES,
    Attempt,
    Finding,
    SeverityRule,
    default_severity,
)
from labkit.redteam.report import Report
from labkit.redteam.scope import PROBES, Scope, ScopeError
from labkit.serving import PredictionAPI, QueryBudgetExceeded, RateLimitExceeded

__all__ = ["Campaign"]

_MIN_THRESHOLD = 0.05

# What a campaign's journal records, and the arguments each action takes (see Campaign.replay).
_ACTIONS: dict[str, frozenset[str]] = {
    "run": frozenset({"probes"}),
    "run_probe": frozenset({"probe", "settings"}),
    "log_manual": frozenset(
        {
            "technique",
            "title",
            "successes",
            "trials",
            "queries",
            "cost",
            "threshold",
            "evidence",
            "reproduction",
            "prompts",
            "clean",
            "adversarial",
        }
    ),
    "ask": frozenset({"x"}),
    "spend": frozenset({"n"}),
}


def _check_data(value: object, name: str) -> LabData | None:
    if value is not None and not isinstance(value, LabData):
        raise TypeError(
            f"{name} must be a labkit LabData (e.g. from lk.data.load), got {type(value).__name__}"
        )
    return value


# What the grader replays of a learner's journal: a campaign a notebook runs takes a handful of
# actions, with probe settings near their defaults; a journal far beyond that would only keep
# the grader busy (each probe runs again).
_MAX_JOURNAL = 200
_MAX_SETTING_FACTOR = 10


def _check_replayable(journal: Sequence[Any]) -> None:
    """Refuse (``ValueError``) a journal too long, or with an integer probe setting more than ten
    times its default, for the grader to replay."""
    if len(journal) > _MAX_JOURNAL:
        raise ValueError(f"a journal of {len(journal)} actions; the grader replays at most {_MAX_JOURNAL}")
    for entry in journal:
        if not (isinstance(entry, tuple | list) and len(entry) == 2 and entry[0] == "run_probe"):
            continue
        args = entry[1] if isinstance(entry[1], Mapping) else {}
        given = args.get("settings")
        settings: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        defaults = _probes.DEFAULTS.get(str(args.get("probe")), {})
        for key, value in settings.items():
            default = defaults.get(key)
            if (
                isinstance(default, int)
                and isinstance(value, numbers.Real)
                and float(value) > _MAX_SETTING_FACTOR * default
            ):
                raise ValueError(
                    f"probe {args.get('probe')!r} with {key}={value}, more than {_MAX_SETTING_FACTOR} times "
                    f"its default of {default}: the grader does not replay it"
                )


class Campaign:
    """A red-team campaign against one target, inside one scope.

    Parameters
    ----------
    target:
        A vision model behind a :class:`~labkit.serving.PredictionAPI`, or an assistant:
        any ``(messages, *, tools) -> Reply`` callable from :mod:`labkit.genai`.
    scope:
        The rules of engagement (:class:`~labkit.redteam.Scope`), enforced on every probe and
        manual attempt.
    data:
        Labelled inputs the red team attacks (and on which it measures fidelity).
    model:
        The model's weights, used only when ``scope.weights`` is true.
    surrogate_data:
        The attacker's own labelled data: trains the surrogate of the transfer and patch
        probes, and is the query pool of the extraction probe.
    members, nonmembers:
        Records known to be in / out of the training set (the owner's canaries) for the
        membership probe.
    scenario:
        The :class:`~labkit.genai.Scenario` (secret, tools, policy) of an assistant target.
    severity:
        The severity rule ``(success_rate, cost) -> severity``; :func:`default_severity` unless given.
    name:
        The campaign's name, for the report.
    seed:
        Seeds every random choice of the probes.

    Every action taken on a campaign from outside (:meth:`run`, :meth:`run_probe`,
    :meth:`log_manual`, :meth:`ask`, :meth:`spend`) is recorded in its :attr:`journal`, which
    :meth:`replay` repeats on another campaign: the retest of a fixed target, or a check that
    the findings follow from what was done.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> import labkit as lk
    >>> from labkit.serving import PredictionAPI
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> data = lk.data.LabData(name="toy", split="test", x=torch.rand(8, 1, 2, 2),
    ...                        y=torch.zeros(8, dtype=torch.long), classes=["a", "b"])
    >>> campaign = Campaign(PredictionAPI(model), Scope(techniques=["api_recon"], query_budget=500),
    ...                     data=data)
    >>> [f.technique for f in campaign.run().findings]
    ['AML.T0029', 'AML.T0024']
    >>> campaign.run_probe("white_box")
    Traceback (most recent call last):
    ...
    labkit.redteam.scope.ScopeError: probe 'white_box' (AML.T0043.000) is not in scope; ...
    >>> [action for action, _ in campaign.journal]
    ['run', 'run_probe']
    >>> retest = Campaign(PredictionAPI(model, output="label"), campaign.scope, data=data)
    >>> [f.technique for f in retest.replay(campaign.journal).findings]  # labels only: no score leak
    ['AML.T0029']
    """

    target: PredictionAPI | Callable[..., Any]
    scope: Scope
    kind: str
    data: LabData | None
    model: LabModel | None
    surrogate_data: LabData | None
    members: LabData | None
    nonmembers: LabData | None
    scenario: Any
    severity: SeverityRule
    name: str
    seed: int
    queries_used: int
    attempts: list[Attempt]

    def __init__(
        self,
        target: PredictionAPI | Callable[..., Any],
        scope: Scope,
        *,
        data: LabData | None = None,
        model: LabModel | None = None,
        surrogate_data: LabData | None = None,
        members: LabData | None = None,
        nonmembers: LabData | None = None,
        scenario: Any = None,
        severity: SeverityRule = default_severity,
        name: str = "red-team campaign",
        seed: int = 0,
    ) -> None:
        if not isinstance(scope, Scope):
            raise TypeError(f"scope must be a labkit.redteam.Scope, got {type(scope).__name__}")
        if isinstance(target, PredictionAPI):
            self.kind = "vision"
        elif callable(target) and not isinstance(target, torch.nn.Module):
            self.kind = "assistant"
        else:
            raise TypeError(
                "target must be a labkit.serving.PredictionAPI (a vision model behind its API) or an "
                f"assistant callable as target(messages, *, tools), got {type(target).__name__}"
            )
        if model is not None and not isinstance(model, LabModel):
            raise TypeError(f"model must be a labkit.LabModel, got {type(model).__name__}")
        if self.kind == "assistant":
            from labkit.genai import Scenario

            if not isinstance(scenario, Scenario):
                raise ValueError(
                    "an assistant target needs scenario=, a labkit.genai.Scenario (its secret and tools)"
                )
        if not callable(severity):
            raise TypeError(
                f"severity must be a rule (success_rate, cost) -> str, got {type(severity).__name__}"
            )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.target = target
        self.scope = scope
        self.data = _check_data(data, "data")
        self.model = model
        self.surrogate_data = _check_data(surrogate_data, "surrogate_data")
        self.members = _check_data(members, "members")
        self.nonmembers = _check_data(nonmembers, "nonmembers")
        self.scenario = scenario
        self.severity = severity
        self.name = str(name)
        self.seed = int(seed)
        self.queries_used = 0
        self.attempts: list[Attempt] = []
        self._findings: list[Finding] = []
        self._surrogate_model: LabModel | None = None
        self._observations: dict[int, Observation] = {}
        self._journal: list[tuple[str, dict[str, Any]]] = []
        self._depth: int = 0  # > 0 while an action runs: the actions it calls are not recorded
        self._retriaged: bool = False  # re-rated with a rule of the caller's (not in the journal)

    # ------------------------------------------------------------------ budget and inputs
    @property
    def queries_left(self) -> int:
        """Queries the scope's budget still allows."""
        return self.scope.query_budget - self.queries_used

    def reserve(self, n: int) -> None:
        """Refuse (ScopeError) a step that would need more queries than the budget has left."""
        if n > self.queries_left:
            raise ScopeError(
                f"this step needs up to {n} queries but only {self.queries_left} of the scope's budget of "
                f"{self.scope.query_budget} remain"
            )

    def spend(self, n: int) -> None:
        """Count ``n`` queries made outside :meth:`ask` (an attack that calls the API itself)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative number of queries, got {n!r}")
        with self._action("spend", n=int(n)):
            self.queries_used += int(n)

    def ask(self, x: torch.Tensor) -> Any:
        """One call to the target's API, paid for from the scope's budget."""
        with self._action("ask", x=x.detach().clone() if isinstance(x, torch.Tensor) else x):
            self.reserve(len(x))
            assert isinstance(self.target, PredictionAPI)
            before = self.target.queries_used
            try:
                return self.target(x)
            finally:
                self.spend(self.target.queries_used - before)

    def need(self, name: str) -> Any:
        """The input ``name`` given to the campaign; ``NotApplicable`` when it was not given."""
        value = getattr(self, name)
        if value is None:
            raise NotApplicable(f"this probe needs {name}=, which the campaign was not given")
        return value

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator seeded with ``seed + offset``: a probe's randomness repeats run to run."""
        return torch.Generator().manual_seed(self.seed + offset)

    def surrogate(self) -> LabModel:
        """The attacker's own model, trained once on ``surrogate_data`` and kept."""
        if self._surrogate_model is None:
            from labkit.attacks import train_surrogate

            data = self.need("surrogate_data")
            self._surrogate_model = train_surrogate(data, family="mlp", epochs=10, seed=self.seed + 1)
        return self._surrogate_model

    # ------------------------------------------------------------------ logging
    def _log(self, probe: str, technique: str, outcome: str, **fields: Any) -> Attempt:
        attempt = Attempt(
            index=len(self.attempts) + 1,
            probe=probe,
            technique=technique,
            outcome=outcome,
            success_rate=fields.get("success_rate"),
            trials=int(fields.get("trials", 0)),
            queries=int(fields.get("queries", 0)),
            seconds=float(fields.get("seconds", 0.0)),
            settings=dict(fields.get("settings", {})),
            note=str(fields.get("note", "")),
        )
        self.attempts.append(attempt)
        return attempt

    def _rate(self, success_rate: float, cost: float) -> str:
        level = self.severity(success_rate, cost)
        if level not in SEVERITIES:
            raise ValueError(f"the severity rule returned {level!r}; expected one of {', '.join(SEVERITIES)}")
        return str(level)

    def _finding(self, obs: Observation, probe: str, attempt: int) -> Finding:
        mitigations = RECOMMENDATIONS.get(obs.technique, ((), ""))[0]
        return Finding(
            title=obs.title,
            technique=obs.technique,
            severity=self._rate(obs.success_rate, obs.cost),
            success_rate=obs.success_rate,
            trials=obs.trials,
            cost=obs.cost,
            threshold=obs.threshold,
            evidence=dict(obs.evidence),
            reproduction=obs.reproduction,
            mitigations=mitigations,
            probe=probe,
            attempt=attempt,
            clean=obs.clean,
            adversarial=obs.adversarial,
            prompts=obs.prompts,
        )

    # ------------------------------------------------------------------ running
    def _settings(self, probe: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        defaults = _probes.DEFAULTS[probe]
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise TypeError(
                f"unknown settings {unknown} for probe {probe!r}; it takes {', '.join(defaults) or 'none'}"
            )
        settings = {**defaults, **overrides}
        eps = settings.get("eps")
        if eps is not None:
            if (
                isinstance(eps, bool)
                or not isinstance(eps, numbers.Real)
                or not math.isfinite(eps)
                or eps <= 0
            ):
                raise ValueError(f"eps must be a positive number (pixel units), got {eps!r}")
            if float(eps) > self.scope.max_eps:
                raise ScopeError(
                    f"eps={eps:.4g} is larger than the scope's max_eps={self.scope.max_eps:.4g}; "
                    "ask the owner to widen the scope or use a smaller eps"
                )
        return settings

    def run_probe(self, probe: str, **settings: Any) -> list[Finding]:
        """Run one probe, log the attempt, and return the findings its evidence supports.

        Raises
        ------
        ScopeError
            The probe, its ``eps`` or its queries are outside the scope (the refusal is logged).
        ValueError
            Unknown probe, a probe for another kind of target, or an input it needs is missing.
        """
        with self._action("run_probe", probe=probe, settings=dict(settings)):
            return self._run_probe(probe, settings)

    def _run_probe(self, probe: str, settings: dict[str, Any]) -> list[Finding]:
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; expected one of {', '.join(PROBES)}")
        info = PROBES[probe]
        try:
            if not self.scope.allows(probe):
                raise ScopeError(
                    f"probe {probe!r} ({info.technique}) is not in scope; the scope allows "
                    f"{', '.join(self.scope.probes) or 'no probe'}"
                )
            if probe == "white_box" and not self.scope.weights:
                raise ScopeError(
                    "probe 'white_box' needs the model's weights, and the scope says weights=False"
                )
            full = self._settings(probe, settings)
        except ScopeError as err:
            self._log(probe, info.technique, "refused", settings=settings, note=str(err))
            raise
        if info.target != self.kind:
            raise ValueError(
                f"probe {probe!r} tests a {info.target} target, and this target is an {self.kind}"
            )
        return self._execute(probe, full, strict=True)

    def _execute(self, probe: str, settings: dict[str, Any], *, strict: bool) -> list[Finding]:
        info = PROBES[probe]
        before, start = self.queries_used, time.perf_counter()
        try:
            observations = _probes.run(probe, self, settings)
        except NotApplicable as err:
            self._log(probe, info.technique, "not applicable", settings=settings, note=str(err))
            if strict:
                raise ValueError(str(err)) from err
            return []
        except (RateLimitExceeded, QueryBudgetExceeded) as err:
            self._log(
                probe,
                info.technique,
                "blocked",
                queries=self.queries_used - before,
                seconds=time.perf_counter() - start,
                settings=settings,
                note=f"the target refused queries: {err}",
            )
            return []
        except ScopeError as err:
            self._log(probe, info.technique, "refused", settings=settings, note=str(err))
            if strict:
                raise
            return []
        seconds, queries = time.perf_counter() - start, self.queries_used - before
        found: list[Finding] = []
        for k, obs in enumerate(observations):
            supported = obs.trials > 0 and obs.success_rate >= obs.threshold
            attempt = self._log(
                probe,
                obs.technique,
                "finding" if supported else "no finding",
                success_rate=obs.success_rate,
                trials=obs.trials,
                queries=queries if k == 0 else 0,
                seconds=seconds if k == 0 else 0.0,
                settings=settings,
                note=obs.title
                if supported
                else f"below the evidence floor of {obs.threshold:.0%}: {obs.title}",
            )
            self._observations[attempt.index] = obs
            if supported:
                found.append(self._finding(obs, probe, attempt.index))
        self._findings.extend(found)
        return found

    def run(self, probes: Sequence[str] | None = None) -> Campaign:
        """Run every probe in scope for this kind of target, or the probes named.

        Run by scope, a probe that does not apply, is blocked by the target, or would overrun
        the budget is logged and skipped. Named probes run through :meth:`run_probe` and raise
        as it does (:class:`ScopeError` outside the scope). Returns the campaign, so that
        ``campaign.run()`` displays the report.
        """
        if probes is not None and (isinstance(probes, str) or not isinstance(probes, Sequence)):
            raise TypeError("probes must be a list of probe names, e.g. ['transfer', 'membership']")
        with self._action("run", probes=None if probes is None else list(probes)):
            return self._run(probes)

    def _run(self, probes: Sequence[str] | None) -> Campaign:
        if probes is not None:
            for p in probes:
                self.run_probe(p)
            return self
        for p in self.scope.probes:
            if PROBES[p].target != self.kind:
                continue
            if p == "white_box" and not self.scope.weights:
                self._log(p, PROBES[p].technique, "refused", note="the scope does not include the weights")
                continue
            self._execute(p, self._settings(p, {}), strict=False)
        return self

    # ------------------------------------------------------------------ manual work
    def log_manual(
        self,
        *,
        technique: str,
        title: str,
        successes: int,
        trials: int,
        queries: int = 0,
        cost: float | None = None,
        threshold: float = 0.1,
        evidence: Mapping[str, Any] | None = None,
        reproduction: Sequence[str] = (),
        prompts: Sequence[str] = (),
        clean: torch.Tensor | None = None,
        adversarial: torch.Tensor | None = None,
    ) -> Finding | None:
        """Log an attempt a person made by hand; it becomes a finding when its evidence supports it.

        Parameters
        ----------
        technique:
            The ATLAS technique id; it must be in scope.
        title:
            What was tried and what happened, in one line.
        successes, trials:
            How many of the ``trials`` attempts worked.
        queries:
            Queries sent to the target (counted against the scope's budget).
        cost:
            Target queries per success (default ``queries / successes``).
        threshold:
            The evidence floor, at least 0.05: a finding needs ``successes / trials >= threshold``.
        evidence, reproduction, prompts, clean, adversarial:
            What a reader needs to check the claim.

        Returns
        -------
        Finding or None
            The finding, or ``None`` when the evidence does not clear the floor (still logged).
        """
        args: dict[str, Any] = {
            "technique": technique,
            "title": title,
            "successes": successes,
            "trials": trials,
            "queries": queries,
            "cost": cost,
            "threshold": threshold,
            "evidence": None if evidence is None else dict(evidence),
            "reproduction": tuple(str(s) for s in reproduction),
            "prompts": tuple(str(p) for p in prompts),
            "clean": clean,
            "adversarial": adversarial,
        }
        with self._action("log_manual", **args):
            return self._log_manual(**args)

    def _log_manual(
        self,
        *,
        technique: str,
        title: str,
        successes: int,
        trials: int,
        queries: int,
        cost: float | None,
        threshold: float,
        evidence: Mapping[str, Any] | None,
        reproduction: Sequence[str],
        prompts: Sequence[str],
        clean: torch.Tensor | None,
        adversarial: torch.Tensor | None,
    ) -> Finding | None:
        if not isinstance(technique, str) or technique not in atlas.TECHNIQUES:
            raise ValueError(
                f"technique must be an ATLAS technique id from labkit.atlas.TECHNIQUES, got {technique!r}"
            )
        if not isinstance(title, str) or not title.strip():
            raise ValueError("title must be a non-empty sentence saying what was tried")
        for value, name in ((successes, "successes"), (trials, "trials"), (queries, "queries")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if trials == 0 or successes > trials:
            raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, numbers.Real)
            or not (_MIN_THRESHOLD <= threshold <= 1)
        ):
            raise ValueError(f"threshold must be in [{_MIN_THRESHOLD}, 1], got {threshold!r}")
        settings = {"successes": successes, "trials": trials}
        try:
            if not self.scope.allows_technique(technique):
                raise ScopeError(f"manual attempts of {atlas.describe(technique)} are not in scope")
            self.reserve(int(queries))
        except ScopeError as err:
            self._log("manual", technique, "refused", settings=settings, note=str(err))
            raise
        self.spend(int(queries))
        rate = successes / trials
        if cost is None:
            cost = queries / successes if successes else math.inf
        obs = Observation(
            technique=technique,
            title=title.strip(),
            success_rate=rate,
            trials=int(trials),
            cost=float(cost),
            threshold=float(threshold),
            evidence={"successes": int(successes), "trials": int(trials), **dict(evidence or {})},
            reproduction=tuple(str(s) for s in reproduction),
            clean=clean,
            adversarial=adversarial,
            prompts=tuple(str(p) for p in prompts),
        )
        supported = rate >= threshold
        attempt = self._log(
            "manual",
            technique,
            "finding" if supported else "no finding",
            success_rate=rate,
            trials=trials,
            queries=queries,
            settings=settings,
            note=obs.title,
        )
        self._observations[attempt.index] = obs
        if not supported:
            return None
        finding = self._finding(obs, "manual", attempt.index)
        self._findings.append(finding)
        return finding

    # ------------------------------------------------------------------ results
    @property
    def findings(self) -> list[Finding]:
        """The findings so far, most severe first (then by success rate)."""
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(self._findings, key=lambda f: (order[f.severity], -f.success_rate, f.attempt))

    def triage(self, rule: SeverityRule) -> Campaign:
        """Re-rate every finding with ``rule(success_rate, cost) -> severity``; later ones use it too."""
        if not callable(rule):
            raise TypeError(
                f"rule must be a function (success_rate, cost) -> severity, got {type(rule).__name__}"
            )
        old = self.severity
        self.severity = rule
        try:
            self._findings = [
                dataclasses.replace(f, severity=self._rate(f.success_rate, f.cost)) for f in self._findings
            ]
        except Exception:
            self.severity = old
            raise
        self._retriaged = True
        return self

    # ------------------------------------------------------------------ journal and replay
    @contextlib.contextmanager
    def _action(self, name: str, **args: Any) -> Iterator[None]:
        """Record ``name(**args)`` in the journal when it is called from outside (not by another
        action of this campaign), whether it succeeds or raises."""
        if self._depth == 0:
            self._journal.append((name, args))
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @property
    def journal(self) -> list[tuple[str, dict[str, Any]]]:
        """What was done to this campaign from outside, in order: ``(action, arguments)`` pairs,
        the action one of ``run``, ``run_probe``, ``log_manual``, ``ask`` and ``spend``."""
        return [(name, dict(args)) for name, args in self._journal]

    def replay(self, journal: Sequence[Any]) -> Campaign:
        """Repeat a campaign's :attr:`journal` on this one, in order, and return this campaign.

        Probes run again with the same settings against this campaign's target (the same seed
        gives the same probe inputs), manual attempts are logged as they were, queries asked
        again. An action that was refused or failed there fails here too: it is logged as it was
        and the replay goes on. A journal that is not a list of ``(action, arguments)`` pairs of
        the actions above raises ``ValueError`` before anything runs.
        """
        if isinstance(journal, str | bytes) or not isinstance(journal, Sequence):
            raise ValueError(
                f"a journal is a list of (action, arguments) pairs, got {type(journal).__name__}"
            )
        steps: list[tuple[str, dict[str, Any]]] = []
        for k, entry in enumerate(journal):
            if not (isinstance(entry, tuple | list) and len(entry) == 2):
                raise ValueError(f"journal entry {k} is not an (action, arguments) pair")
            name, args = entry
            if name not in _ACTIONS or not isinstance(args, Mapping):
                raise ValueError(
                    f"journal entry {k}: {str(name)[:40]!r} is not one of {', '.join(_ACTIONS)}, "
                    "with its arguments as a mapping"
                )
            unknown = sorted(str(a)[:40] for a in set(args) - _ACTIONS[name])
            if unknown:
                raise ValueError(f"journal entry {k}: {name} takes no argument {', '.join(unknown)}")
            steps.append((name, dict(args)))
        for name, args in steps:
            try:
                if name == "run_probe":
                    settings = args.get("settings") or {}
                    if not isinstance(settings, Mapping):
                        raise TypeError("a probe's settings must be a mapping")
                    self.run_probe(args.get("probe", ""), **{str(k): v for k, v in settings.items()})
                elif name == "run":
                    self.run(args.get("probes"))
                elif name == "log_manual":
                    self.log_manual(**args)
                elif name == "ask":
                    self.ask(args.get("x"))  # type: ignore[arg-type]
                else:
                    self.spend(args.get("n", 0))
            except (
                ScopeError,
                ValueError,
                TypeError,
                AttributeError,
                RateLimitExceeded,
                QueryBudgetExceeded,
            ):
                continue
        return self

    # A campaign against a vision target, rated by the default rule, crosses from a learner's
    # kernel to the grader as its constructor arguments and its journal: the grader's own class
    # replays the journal against a twin of the target, so that its code runs every probe and
    # rates every finding, and the target's own counters keep what the learner's code sent.
    _grading_fields: ClassVar[tuple[str, ...]] = (
        "target",
        "scope",
        "data",
        "model",
        "surrogate_data",
        "members",
        "nonmembers",
        "name",
        "seed",
        "journal",
    )

    def _grading_state(self) -> dict[str, Any] | None:
        """The constructor arguments and the journal, or ``None`` for an assistant target, a
        severity rule other than the default or a campaign re-rated by :meth:`triage`."""
        if self.kind != "vision" or self.severity is not default_severity or self._retriaged:
            return None
        return {
            "target": self.target,
            "scope": self.scope,
            "data": self.data,
            "model": self.model,
            "surrogate_data": self.surrogate_data,
            "members": self.members,
            "nonmembers": self.nonmembers,
            "name": self.name,
            "seed": self.seed,
            "journal": [[name, args] for name, args in self._journal],
        }

    @classmethod
    def _grading_rebuild(cls, *, target: Any, journal: Sequence[Any] = (), **fields: Any) -> Campaign:
        """The receiver's campaign for described state: built with these arguments, its journal
        replayed against a twin of ``target`` (an API whose counters start at zero)."""
        if not isinstance(target, PredictionAPI):
            raise ValueError(
                "the campaign's target is not an API the grader knows: run the campaign against the "
                "prediction API the notebook or the test gives you"
            )
        _check_replayable(journal)
        return cls(target.twin(), **fields).replay(journal)

    def report(self, *, summary: str | None = None, title: str | None = None) -> Report:
        """The campaign's report (Markdown and HTML); ``summary`` is the executive summary."""
        if self.kind == "vision":
            assert isinstance(self.target, PredictionAPI)
            shape = "x".join(map(str, self.target.input_shape))
            target = f"model behind a prediction API (inputs {shape}, {self.target.num_classes} classes)"
        else:
            target = f"assistant {type(self.target).__name__}"
        return Report(
            title=title or self.name,
            target=target,
            scope=self.scope,
            findings=self.findings,
            attempts=list(self.attempts),
            queries_used=self.queries_used,
            summary=summary,
        )

    def plot(self, ax: Any = None) -> Any:
        """Success rate of every measured attempt, coloured by severity."""
        return self.report().plot(ax=ax)

    def to_markdown(self) -> str:
        return self.report().to_markdown()

    def to_html(self) -> str:
        return self.report().to_html()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return (
            f"Campaign(name={self.name!r}, target={self.kind}, attempts={len(self.attempts)}, "
            f"findings={len(self._findings)}, queries_used={self.queries_used})"
        )
