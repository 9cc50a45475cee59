"""Prompt injection and jailbreaks: a simulated assistant, attacks, judges, defenses, a harness.

No language-model weights are downloaded in this course, so the lab runs on
:class:`SimulatedAssistant`, a readable rule set that fails the way real assistants fail
(instructions anywhere in the context are read as instructions). Any real model plugs in
through the same interface, ``target(messages, *, tools) -> Reply``; see
:class:`labkit.genai.hf.HuggingFaceTarget` for a local Hugging Face model.

>>> from labkit import genai
>>> s = genai.make_scenario(seed=0)
>>> attacks = genai.attack_corpus(s, n_per_technique=3)
>>> result = genai.evaluate(genai.SimulatedAssistant(), scenario=s, attacks=attacks,
...                         benign=genai.benign_corpus(s, n=12), progress=False)
>>> 0.0 <= result.asr("no defense") <= 1.0 and result.benign_success("no defense")
1.0

MITRE ATLAS: AML.T0051 LLM Prompt Injection, AML.T0054 LLM Jailbreak.
"""

from labkit.genai.corpus import (
    CHANNELS,
    GOALS,
    TECHNIQUES,
    Case,
    Technique,
    attack_corpus,
    benign_corpus,
    detector_texts,
)
from labkit.genai.defenses import (
    BlockEverything,
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
from labkit.genai.detector import (
    DetectorEvaluation,
    DetectorReport,
    InjectionDetector,
    evaluate_detector,
    fit_detector,
    train_detector,
)
from labkit.genai.harness import HarnessResult, evaluate, standard_configs
from labkit.genai.judges import (
    Verdict,
    benign_success,
    judge,
    leaked_secret,
    policy_violation,
    unauthorised_calls,
)
from labkit.genai.scenario import Policy, Scenario, make_scenario
from labkit.genai.simulator import STRENGTHS, Explanation, SimulatedAssistant, Strength
from labkit.genai.text import find_secret
from labkit.genai.types import DEFAULT_TOOLS, Message, Reply, Target, Tool, ToolCall, validate_messages

__all__ = [
    "CHANNELS",
    "DEFAULT_TOOLS",
    "GOALS",
    "STRENGTHS",
    "TECHNIQUES",
    "BlockEverything",
    "Case",
    "Defense",
    "DefenseStack",
    "DetectorEvaluation",
    "DetectorFilter",
    "DetectorReport",
    "Explanation",
    "HarnessResult",
    "HeuristicFilter",
    "HumanConfirmation",
    "InjectionDetector",
    "InstructionHierarchy",
    "Message",
    "OutputFilter",
    "Policy",
    "Reply",
    "Scenario",
    "SimulatedAssistant",
    "Spotlighting",
    "Strength",
    "Target",
    "Technique",
    "Tool",
    "ToolAllowList",
    "ToolCall",
    "Verdict",
    "attack_corpus",
    "benign_corpus",
    "benign_success",
    "detector_texts",
    "evaluate",
    "evaluate_detector",
    "find_secret",
    "fit_detector",
    "judge",
    "leaked_secret",
    "make_scenario",
    "policy_violation",
    "standard_configs",
    "train_detector",
    "unauthorised_calls",
    "validate_messages",
]
