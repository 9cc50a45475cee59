"""The MITRE ATLAS techniques and mitigations this course covers.

Findings, lessons and reports refer to ATLAS ids; this catalogue gives each id a name and the
stage of the AI system's life where it strikes, so figures and reports can place it.
See https://atlas.mitre.org for the full matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labkit import config

__all__ = ["MITIGATIONS", "STAGES", "TECHNIQUES", "Entry", "describe", "threat_map"]


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    stage: str
    mitigated_by: tuple[str, ...] = ()


#: Where in the life of an AI system an attack acts, in order.
STAGES = ("data and training", "reconnaissance", "inference inputs", "outputs and API", "operations")

TECHNIQUES: dict[str, Entry] = {
    e.id: e
    for e in [
        Entry("AML.T0020", "Poison Training Data", "data and training"),
        Entry("AML.T0043.004", "Insert Backdoor Trigger", "data and training", ("AML.M0003", "AML.M0006")),
        Entry(
            "AML.T0010.001", "AI Supply Chain Compromise: AI Software", "data and training", ("AML.M0006",)
        ),
        Entry("AML.T0010.003", "AI Supply Chain Compromise: Model", "data and training", ("AML.M0006",)),
        Entry("AML.T0014", "Discover AI Model Family", "reconnaissance", ("AML.M0006",)),
        Entry("AML.T0015", "Evade AI Model", "inference inputs", ("AML.M0003", "AML.M0006")),
        Entry("AML.T0043", "Craft Adversarial Data", "inference inputs", ("AML.M0003", "AML.M0006")),
        Entry("AML.T0043.000", "White-Box Optimization", "inference inputs", ("AML.M0003", "AML.M0006")),
        Entry("AML.T0043.001", "Black-Box Optimization", "inference inputs", ("AML.M0003", "AML.M0006")),
        Entry("AML.T0043.002", "Black-Box Transfer", "inference inputs", ("AML.M0003", "AML.M0006")),
        Entry("AML.T0043.003", "Manual Modification", "inference inputs", ("AML.M0003", "AML.M0006")),
        Entry("AML.T0051", "LLM Prompt Injection", "inference inputs"),
        Entry("AML.T0054", "LLM Jailbreak", "inference inputs"),
        Entry("AML.T0024", "Exfiltration via AI Inference API", "outputs and API"),
        Entry("AML.T0024.000", "Infer Training Data Membership", "outputs and API"),
        Entry("AML.T0024.001", "Invert AI Model", "outputs and API"),
        Entry("AML.T0024.002", "Extract AI Model", "outputs and API"),
        Entry("AML.T0029", "Denial of AI Service", "operations"),
        Entry("AML.T0031", "Erode AI Model Integrity", "operations", ("AML.M0003", "AML.M0006")),
    ]
}

MITIGATIONS: dict[str, str] = {
    "AML.M0003": "Model Hardening",
    "AML.M0006": "Use Ensemble Methods",
    # Further mitigations that red-team findings recommend (labkit.redteam).
    "AML.M0002": "Passive AI Output Obfuscation",
    "AML.M0004": "Restrict Number of AI Model Queries",
    "AML.M0008": "Validate AI Model",
    "AML.M0015": "Adversarial Input Detection",
    "AML.M0020": "Generative AI Guardrails",
    "AML.M0021": "Generative AI Guidelines",
}


def describe(atlas_id: str) -> str:
    """``"AML.T0015 Evade AI Model"`` for a known id; ``ValueError`` for an unknown one."""
    if atlas_id in TECHNIQUES:
        return f"{atlas_id} {TECHNIQUES[atlas_id].name}"
    if atlas_id in MITIGATIONS:
        return f"{atlas_id} {MITIGATIONS[atlas_id]}"
    raise ValueError(f"unknown ATLAS id {atlas_id!r}; known: {', '.join([*TECHNIQUES, *MITIGATIONS])}")


def lessons_by_technique(course: Any = None) -> dict[str, list[str]]:
    """For each technique, the ids of the lessons (from course.yml) that teach it.

    ``course`` is a loaded course (``lk.course.load_course()``); by default the one that
    :func:`labkit.config.course` finds.
    """
    course = course or config.course()
    if course is None:
        raise ValueError("no course.yml found: pass course=lk.course.load_course(path)")
    found: dict[str, list[str]] = {tid: [] for tid in TECHNIQUES}
    for lesson in course.lessons:
        for tid in lesson.atlas:
            for known in TECHNIQUES:
                if known == tid or known.startswith(tid + "."):
                    if lesson.id not in found[known]:
                        found[known].append(lesson.id)
    return found


def threat_map(course: Any = None) -> Any:
    """A figure of the covered ATLAS techniques by life-cycle stage, with the lessons that teach
    each one and the mitigations (M0003 hardening, M0006 ensembles) that apply."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    taught = lessons_by_technique(course)
    columns = {stage: [e for e in TECHNIQUES.values() if e.stage == stage] for stage in STAGES}
    rows = max(len(v) for v in columns.values())
    fig, ax = plt.subplots(figsize=(15, 0.95 * rows + 1.4))
    ax.set_xlim(0, len(STAGES))
    ax.set_ylim(rows + 0.2, -0.9)
    ax.axis("off")
    colours = {"both": "#f4a261", "AML.M0003": "#e9c46a", "AML.M0006": "#8ecae6", "none": "#dddddd"}
    for col, stage in enumerate(STAGES):
        ax.text(col + 0.5, -0.5, stage, ha="center", va="center", fontsize=11, weight="bold")
        for row, entry in enumerate(columns[stage]):
            mit = set(entry.mitigated_by)
            key = "both" if len(mit) == 2 else (next(iter(mit)) if mit else "none")
            ax.add_patch(
                FancyBboxPatch(
                    (col + 0.04, row + 0.06),
                    0.92,
                    0.82,
                    boxstyle="round,pad=0.0,rounding_size=0.08",
                    fc=colours[key],
                    ec="#555555",
                    lw=0.6,
                )
            )
            lessons = ", ".join(taught.get(entry.id, [])) or "-"
            ax.text(
                col + 0.5, row + 0.33, f"{entry.id}\n{entry.name}", ha="center", va="center", fontsize=7.4
            )
            ax.text(
                col + 0.5,
                row + 0.74,
                f"lessons {lessons}",
                ha="center",
                va="center",
                fontsize=7,
                style="italic",
            )
    handles = [
        plt.Rectangle((0, 0), 1, 1, fc=colours["both"]),
        plt.Rectangle((0, 0), 1, 1, fc=colours["AML.M0003"]),
        plt.Rectangle((0, 0), 1, 1, fc=colours["AML.M0006"]),
        plt.Rectangle((0, 0), 1, 1, fc=colours["none"]),
    ]
    ax.legend(
        handles,
        [
            "mitigated by M0003 and M0006",
            "M0003 Model Hardening",
            "M0006 Ensemble Methods",
            "other mitigations",
        ],
        loc="lower center",
        ncol=4,
        frameon=False,
        bbox_to_anchor=(0.5, -0.08),
        fontsize=8,
    )
    ax.set_title("Where attacks strike an AI system (MITRE ATLAS) and where this course teaches them")
    fig.tight_layout()
    return fig
