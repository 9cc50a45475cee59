"""Run an attack corpus and a benign set against a target under several defense configurations.

:func:`evaluate` returns a :class:`HarnessResult`: the attack success rate (ASR) of every
technique under every configuration, plus benign task success, as a table (in a notebook it
renders itself) and a heat map (:meth:`HarnessResult.plot`). :func:`standard_configs` builds
the configurations the lesson compares: no defense, each layer alone, and the full stack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from labkit.genai.corpus import TECHNIQUES, Case
from labkit.genai.defenses import (
    Defense,
    DefenseStack,
    DetectorFilter,
    HeuristicFilter,
    HumanConfirmation,
    InstructionHierarchy,
    OutputFilter,
    Spotlighting,
    ToolAllowList,
)
from labkit.genai.detector import InjectionDetector, fit_detector
from labkit.genai.judges import judge
from labkit.genai.scenario import Scenario
from labkit.genai.types import Target

__all__ = ["HarnessResult", "Record", "evaluate", "standard_configs"]


@dataclass(frozen=True)
class Record:
    """The outcome of one case under one configuration."""

    config: str
    case_id: str
    kind: str
    technique: str
    goal: str | None
    channel: str
    success: bool
    harmful: bool
    refused: bool
    blocked_by: str | None


class HarnessResult:
    """Attack success rates per technique and configuration, and benign task success.

    Attributes
    ----------
    records:
        One :class:`Record` per case and configuration.
    configs:
        Configuration names, in the order given.
    """

    def __init__(self, records: Sequence[Record], configs: Sequence[str]) -> None:
        self.records = list(records)
        self.configs = list(configs)
        seen = [r.technique for r in self.records if r.kind == "attack"]
        self.techniques = [t for t in TECHNIQUES if t in seen] + sorted(set(seen) - set(TECHNIQUES))

    def _select(self, config: str, **where: object) -> list[Record]:
        if config not in self.configs:
            raise ValueError(f"unknown configuration {config!r}; expected one of {self.configs}")
        return [
            r
            for r in self.records
            if r.config == config and all(getattr(r, k) == v for k, v in where.items())
        ]

    def asr(
        self,
        config: str,
        *,
        technique: str | None = None,
        goal: str | None = None,
        channel: str | None = None,
    ) -> float:
        """Attack success rate in ``[0, 1]`` under ``config``, optionally for one technique,
        goal or channel (``nan`` when no attack matches)."""
        where: dict[str, object] = {"kind": "attack"}
        for key, value in (("technique", technique), ("goal", goal), ("channel", channel)):
            if value is not None:
                where[key] = value
        rows = self._select(config, **where)
        return sum(r.success for r in rows) / len(rows) if rows else float("nan")

    def benign_success(self, config: str) -> float:
        """Fraction of benign tasks done correctly under ``config``."""
        rows = self._select(config, kind="benign")
        return sum(r.success for r in rows) / len(rows) if rows else float("nan")

    def blocked_by(self, config: str) -> Counter[str]:
        """How often each layer intervened under ``config`` (attacks and benign cases together)."""
        return Counter(r.blocked_by for r in self._select(config) if r.blocked_by)

    def table(self) -> dict[str, dict[str, float]]:
        """``{row: {config: value}}``: one row per technique, ``all attacks`` and ``benign success``."""
        rows: dict[str, dict[str, float]] = {}
        for tech in self.techniques:
            rows[tech] = {c: self.asr(c, technique=tech) for c in self.configs}
        rows["all attacks"] = {c: self.asr(c) for c in self.configs}
        rows["benign success"] = {c: self.benign_success(c) for c in self.configs}
        return rows

    def _repr_markdown_(self) -> str:
        table = self.table()
        lines = [
            "Attack success rate per technique (lower is better) and benign task success (higher is better).",
            "",
            "| technique | ATLAS | " + " | ".join(self.configs) + " |",
            "|---|---|" + "---:|" * len(self.configs),
        ]
        for row, values in table.items():
            atlas = TECHNIQUES[row].atlas_id if row in TECHNIQUES else ""
            label = f"**{row}**" if row in ("all attacks", "benign success") else row
            cells = " | ".join("-" if v != v else f"{100 * v:.0f}%" for v in values.values())
            lines.append(f"| {label} | {atlas} | {cells} |")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        table = self.table()
        head = "".join(f"<th>{c}</th>" for c in self.configs)
        body = []
        for row, values in table.items():
            cells = []
            for v in values.values():
                if v != v:
                    cells.append("<td>-</td>")
                    continue
                good = v if row == "benign success" else 1 - v
                colour = f"rgba({int(230 * (1 - good))}, {int(170 * good)}, 80, 0.35)"
                cells.append(f'<td style="background:{colour};text-align:right">{100 * v:.0f}%</td>')
            atlas = TECHNIQUES[row].atlas_id if row in TECHNIQUES else ""
            weight = "bold" if row in ("all attacks", "benign success") else "normal"
            body.append(
                f'<tr><td style="font-weight:{weight}">{row}</td><td>{atlas}</td>{"".join(cells)}</tr>'
            )
        return (
            "<table><caption>Attack success rate per technique (lower is better) and benign task success "
            "(higher is better)</caption>"
            f"<tr><th>technique</th><th>ATLAS</th>{head}</tr>{''.join(body)}</table>"
        )

    def plot(self, *, ax: Any = None) -> Any:
        """A heat map: techniques (and all attacks) by configuration, with benign success below.

        Returns the matplotlib figure.
        """
        import matplotlib.pyplot as plt
        import numpy as np

        table = self.table()
        rows = [*self.techniques, "all attacks"]
        asr = np.array([[table[r][c] for c in self.configs] for r in rows], dtype=float)
        benign = np.array([[table["benign success"][c] for c in self.configs]], dtype=float)
        if ax is None:
            fig, (ax, ax2) = plt.subplots(
                2,
                1,
                figsize=(1.1 * len(self.configs) + 3, 0.42 * len(rows) + 2.2),
                gridspec_kw={"height_ratios": [len(rows), 1.3]},
                sharex=True,
            )
        else:
            fig, ax2 = ax.figure, None
        ax.imshow(asr, cmap="Reds", vmin=0, vmax=1, aspect="auto")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title("attack success rate (lower is better)")
        for (i, j), v in np.ndenumerate(asr):
            if v == v:
                ax.text(
                    j,
                    i,
                    f"{100 * v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="white" if v > 0.6 else "black",
                )
        if ax2 is not None:
            ax2.imshow(benign, cmap="Greens", vmin=0, vmax=1, aspect="auto")
            ax2.set_yticks([0], ["benign success"])
            ax2.set_xticks(range(len(self.configs)), self.configs, rotation=35, ha="right")
            for j, v in enumerate(benign[0]):
                colour = "white" if v > 0.6 else "black"
                ax2.text(j, 0, f"{100 * v:.0f}", ha="center", va="center", fontsize=10, color=colour)
        else:
            ax.set_xticks(range(len(self.configs)), self.configs, rotation=35, ha="right")
        fig.tight_layout()
        return fig


def standard_configs(
    scenario: Scenario, *, detector: InjectionDetector | None = None, seed: int = 0
) -> dict[str, list[Defense]]:
    """The configurations the lesson compares: none, each layer alone, and all layers together.

    Trains a detector with :func:`~labkit.genai.detector.fit_detector` when none is given
    (about a second).
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    detector = detector if detector is not None else fit_detector(scenario, seed=seed)
    single: dict[str, Defense] = {
        "heuristic filter": HeuristicFilter(),
        "detector": DetectorFilter(detector),
        "spotlighting": Spotlighting(),
        "instruction hierarchy": InstructionHierarchy(),
        "output filter": OutputFilter(scenario.secret),
        "tool allow-list": ToolAllowList(),
        "human confirmation": HumanConfirmation(seed=seed),
    }
    configs: dict[str, list[Defense]] = {"no defense": []}
    configs.update({name: [layer] for name, layer in single.items()})
    configs["full stack"] = list(single.values())
    return configs


def evaluate(
    target: Target | Any,
    *,
    scenario: Scenario,
    attacks: Sequence[Case],
    benign: Sequence[Case] = (),
    configs: Mapping[str, Sequence[Defense]] | None = None,
    progress: bool = True,
) -> HarnessResult:
    """Run every case through ``target`` under every defense configuration and judge the replies.

    Parameters
    ----------
    target:
        Any ``(messages, *, tools) -> Reply`` callable, e.g. a
        :class:`~labkit.genai.simulator.SimulatedAssistant`.
    scenario:
        Supplies the tools, the secret and the policy to the judges.
    attacks, benign:
        Cases from :func:`~labkit.genai.corpus.attack_corpus` and
        :func:`~labkit.genai.corpus.benign_corpus`.
    configs:
        ``{name: [layers]}``; ``{"no defense": []}`` by default.
    progress:
        Show a progress bar.

    Examples
    --------
    >>> from labkit.genai import SimulatedAssistant, attack_corpus, benign_corpus, make_scenario
    >>> from labkit.genai.defenses import OutputFilter
    >>> s = make_scenario()
    >>> result = evaluate(
    ...     SimulatedAssistant(strength="naive"), scenario=s,
    ...     attacks=attack_corpus(s, n_per_technique=3, techniques=["direct"]),
    ...     configs={"none": [], "output filter": [OutputFilter(s.secret)]}, progress=False)
    >>> result.asr("none", goal="leak_secret"), result.asr("output filter", goal="leak_secret")
    (1.0, 0.0)
    """
    if not callable(target):
        raise TypeError(f"target must be callable as target(messages, *, tools), got {type(target).__name__}")
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    cases = list(attacks) + list(benign)
    for i, case in enumerate(cases):
        if not isinstance(case, Case):
            raise TypeError(f"cases must be Case objects; item {i} is {type(case).__name__}")
    if not cases:
        raise ValueError("no cases to run: pass attacks and/or benign cases")
    configs = {"no defense": []} if configs is None else dict(configs)
    if not configs:
        raise ValueError("configs is empty; pass at least one, e.g. {'no defense': []}")
    stacks = {name: DefenseStack(target, layers) for name, layers in configs.items()}
    records: list[Record] = []
    total = len(cases) * len(stacks)
    with tqdm(total=total, desc="running corpus", unit="case", disable=not progress) as bar:
        for name, stack in stacks.items():
            for case in cases:
                reply = stack(case.messages, tools=scenario.tools)
                verdict = judge(case, reply, scenario)
                records.append(
                    Record(
                        config=name,
                        case_id=case.id,
                        kind=case.kind,
                        technique=case.technique,
                        goal=case.goal,
                        channel=case.channel,
                        success=verdict.success,
                        harmful=verdict.harmful,
                        refused=verdict.refused,
                        blocked_by=verdict.blocked_by,
                    )
                )
                bar.update()
    return HarnessResult(records, list(configs))
