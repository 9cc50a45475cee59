"""labkit.genai.hf: a local Hugging Face causal LM as a target, on a tiny random model built here.

Nothing is downloaded: the tokenizer is a byte-level vocabulary made in the test and the model
a one-layer GPT-2 with random weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labkit import genai
from labkit.genai import Message, Reply

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from labkit.genai.hf import HuggingFaceTarget, format_prompt  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer() -> object:
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


@pytest.fixture(scope="module")
def model(tokenizer) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=2048,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=256,
        eos_token_id=256,
    )
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def scenario() -> genai.Scenario:
    return genai.make_scenario(seed=0)


def test_tiny_random_model_answers_deterministically(model, tokenizer, scenario) -> None:
    target = HuggingFaceTarget(model, tokenizer, max_new_tokens=12)
    msgs = [scenario.system_message(), Message("user", "What is 2 + 2?")]
    first = target(msgs, tools=scenario.tools)
    assert isinstance(first, Reply) and first == target(msgs, tools=scenario.tools)
    assert not model.training


def test_from_local_loads_offline_and_never_downloads(model, tokenizer, scenario, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    msgs = [scenario.system_message(), Message("user", "Hello")]
    loaded = HuggingFaceTarget.from_local(tmp_path, max_new_tokens=8)
    assert loaded(msgs) == HuggingFaceTarget(model, tokenizer, max_new_tokens=8)(msgs)
    for name in ("gpt2", "meta-llama/Llama-3-8B", str(tmp_path / "missing")):
        with pytest.raises(FileNotFoundError, match="never downloads"):
            HuggingFaceTarget.from_local(name)


def test_prompt_labels_data_and_describes_tools(tokenizer, scenario) -> None:
    msgs = [
        scenario.system_message(),
        Message("user", "Summarise this page."),
        Message("document", "Open from 8 to 5.", source="web"),
    ]
    prompt = format_prompt(msgs, scenario.tools, tokenizer=tokenizer)
    assert "send_email(to, subject, body)" in prompt and "CALL tool_name" in prompt
    assert "[document from web]\nOpen from 8 to 5." in prompt and prompt.endswith("Assistant:")


class _Scripted(torch.nn.Module):
    """A stand-in model that always 'generates' the same text, to test tool-call parsing."""

    def __init__(self, tokenizer, script: str) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.script = tokenizer(script, return_tensors="pt")["input_ids"]
        self.config = transformers.GPT2Config(n_positions=4096)

    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, self.script], dim=1)


def test_tool_calls_are_parsed_and_malformed_ones_dropped(tokenizer, scenario) -> None:
    script = (
        'Sure.\nCALL send_email {"to": "bob@acme.example", "subject": "Hi", "body": "Lunch?"}\n'
        'CALL launch_rockets {}\nCALL transfer_funds {"amount": 5}\n\x00'
    )
    target = HuggingFaceTarget(_Scripted(tokenizer, script), tokenizer)
    reply = target([scenario.system_message(), Message("user", "Email Bob.")], tools=scenario.tools)
    assert reply.text == "Sure."
    assert [str(c) for c in reply.tool_calls] == [
        "send_email(to='bob@acme.example', subject='Hi', body='Lunch?')"
    ]
    assert sum("dropped malformed tool call" in n for n in reply.notes) == 2
    assert any("unprintable" in n for n in reply.notes)


def test_long_prompts_are_cut_with_a_warning_and_bad_arguments_raise(tokenizer, scenario) -> None:
    torch.manual_seed(1)
    small = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    ).eval()
    target = HuggingFaceTarget(small, tokenizer, max_new_tokens=8)
    with pytest.warns(UserWarning, match="keeping the last 56"):
        target([scenario.system_message(), Message("user", "Hello there")])
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        HuggingFaceTarget(small, tokenizer, max_new_tokens=0)
    with pytest.raises(TypeError, match="generate"):
        HuggingFaceTarget("gpt2", tokenizer)
    with pytest.raises(ValueError, match="messages is empty"):
        target([])


def test_harness_runs_against_a_hugging_face_target(model, tokenizer, scenario) -> None:
    target = HuggingFaceTarget(model, tokenizer, max_new_tokens=4)
    attacks = genai.attack_corpus(scenario, n_per_technique=1, techniques=["direct", "indirect_email"])
    result = genai.evaluate(
        target,
        scenario=scenario,
        attacks=attacks,
        benign=genai.benign_corpus(scenario, n=1),
        configs={
            "no defense": [],
            "full stack": [genai.HeuristicFilter(), genai.OutputFilter(scenario.secret)],
        },
        progress=False,
    )
    assert set(result.configs) == {"no defense", "full stack"}
    assert "benign success" in result._repr_markdown_()
    for config in result.configs:
        # every attack ran once under each configuration, and the rate counts its successes
        rows = [r for r in result.records if r.config == config and r.kind == "attack"]
        assert sorted(r.case_id for r in rows) == sorted(a.id for a in attacks)
        assert result.asr(config) == sum(r.success for r in rows) / len(rows)
