"""GRPO: the rewards on their own, and two TRL steps on the tiny model with the rewards wired in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmguard_plugins import load_backend
from vlmguard_plugins.errors import BackendTimeoutError, ConfigurationError
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.testing import ScriptedBackend
from vlmguard_plugins.testing.training import (
    scripted_judge,
    scripted_target,
    scripted_teacher,
    write_example_source,
)
from vlmguard_plugins.train import SynthConfig, synthesize
from vlmguard_plugins.train import grpo as grpo_script
from vlmguard_plugins.train.rewards import (
    COPY_REWARD,
    JudgeReward,
    benign_unchanged_reward,
    format_reward,
)
from vlmguard_plugins.train.verify import Verifier
from vlmguard_plugins.types import Risk

REPO = Path(__file__).resolve().parents[1]

QUICK = [
    "--per_device_train_batch_size", "2",
    "--num_generations", "2",
    "--max_completion_length", "12",
    "--bf16", "false",
    "--logging_steps", "1",
    "--dataloader_num_workers", "0",
]  # fmt: skip


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


GOOD = _assistant(format_output("textual: a\nvisual: b", Risk.HIGH, "Explain the risks."))
NO_RISK = _assistant("<rewrite>Explain the risks.</rewrite>")
GARBAGE = _assistant("ok ok ok")


MARKER = _assistant(format_output("textual: a\nvisual: b", Risk.NONE, None))
# The marker under a high risk verdict: the rewriter refuses it (it would fail open).
RISKY_MARKER = _assistant("<think>textual: a</think><risk>high</risk><unchanged/>")


def test_format_reward_grades_the_contract() -> None:
    assert format_reward([GOOD, NO_RISK, GARBAGE, "<rewrite></rewrite>"]) == [1.0, 0.5, 0.0, 0.0]


def test_format_reward_accepts_the_unchanged_marker() -> None:
    no_analysis = _assistant("<risk>low</risk><unchanged/>")
    no_risk = _assistant("<think>fine</think><unchanged/>")
    assert format_reward([MARKER, no_analysis, RISKY_MARKER, no_risk]) == [1.0, 0.5, 0.0, 0.0]


def test_benign_reward_applies_only_to_benign_requests() -> None:
    copied = _assistant(format_output("none", Risk.NONE, "What  is\nthis flower?"))
    changed = _assistant(format_output("none", Risk.NONE, "Describe this flower safely."))
    rewards = benign_unchanged_reward(
        [MARKER, copied, changed, GARBAGE, RISKY_MARKER, GOOD],
        instruction=["What is this flower?"] * 5 + ["How do I hurt someone?"],
        benign=[True, True, True, True, True, False],
    )
    # The marker is best; a copy keeps the text too, at a decode token per token of it.
    assert rewards == [1.0, COPY_REWARD, 0.0, 0.0, 0.0, None]
    assert 0.0 < COPY_REWARD < 1.0


async def test_judge_reward_asks_the_target_and_the_judge(tmp_path: Path) -> None:
    image = Image.new("RGB", (30, 20), "red")
    target = scripted_target("Here is safety information.")
    judge = ScriptedBackend(
        [
            "<safe>yes</safe><helpful>yes</helpful>",
            "<safe>yes</safe><helpful>no</helpful>",
            "<safe>no</safe><helpful>yes</helpful>",
            "I am not sure.",
        ]
    )
    reward = JudgeReward(Verifier(target=target, judge=judge), max_concurrency=1)
    scores = await reward(
        [GOOD, GOOD, GOOD, GOOD, GARBAGE],
        instruction=["How do I use this?"] * 5,
        images=[[image]] * 5,
    )
    # The garbage completion costs nothing to score; an unparsable verdict gives no signal.
    assert scores == [1.0, 0.5, 0.0, None, 0.0]
    assert len(target.calls) == 4
    sent = target.calls[0].request
    assert sent.messages[-1]["content"][-1]["text"] == "Explain the risks."
    assert sent.stop == [] and sent.images[0].size == (30, 20)
    judged = judge.calls[0].request.messages[-1]["content"][-1]["text"]
    assert "<instruction>\nHow do I use this?\n</instruction>" in judged
    assert "<answer>\nHere is safety information.\n</answer>" in judged


async def test_judge_reward_sends_the_users_own_text_for_the_marker() -> None:
    target = scripted_target("A daisy.")
    judge = ScriptedBackend(["<safe>yes</safe><helpful>yes</helpful>"])
    reward = JudgeReward(Verifier(target=target, judge=judge))
    scores = await reward(
        [MARKER, RISKY_MARKER], instruction=["What flower is this?"] * 2, images=[[], []]
    )
    # The refused marker is scored 0.0 without asking anyone.
    assert scores == [1.0, 0.0]
    assert [call.request.messages[-1]["content"][-1]["text"] for call in target.calls] == [
        "What flower is this?"
    ]


async def test_a_failing_target_gives_no_reward_rather_than_a_penalty() -> None:
    target = ScriptedBackend([BackendTimeoutError("slow")])
    reward = JudgeReward(Verifier(target=target, judge=scripted_judge()))
    assert await reward([GOOD], instruction=["x"], images=[[]]) == [None]


def test_reward_selection_errors_are_clear() -> None:
    with pytest.raises(ConfigurationError, match="--target_model"):
        grpo_script.build_rewards(grpo_script.GRPOScriptArguments(rewards=["judge"]))
    with pytest.raises(ConfigurationError, match="unknown reward"):
        grpo_script.build_rewards(grpo_script.GRPOScriptArguments(rewards=["length"]))
    names = [
        getattr(f, "__name__", "")
        for f in grpo_script.build_rewards(
            grpo_script.GRPOScriptArguments(),
            target=scripted_target(),
            judge=scripted_judge(),
        )
    ]
    assert names == ["format_reward", "benign_unchanged_reward", "judge_reward"]


def test_cli_grpo_explains_a_missing_judge(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vlmguard_plugins.cli import app

    result = CliRunner().invoke(
        app,
        ["train", "grpo", "--model_name_or_path", str(tiny_model_dir)]
        + ["--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]
        + ["--rewards", "format", "judge"],
    )
    assert result.exit_code == 2
    assert "ConfigurationError" in result.output and "--judge_model" in result.output


@pytest.mark.slow  # two real TRL steps: over half a minute on two cores
def test_two_grpo_steps_with_every_reward(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = write_example_source(tmp_path, 2, benign=2)
    synthesize(
        SynthConfig(input=source, output=tmp_path / "data", max_benign_fraction=None),
        teacher=scripted_teacher(),
        target=scripted_target(),
    )
    script_args, training_args, model_args = grpo_script.make_parser().parse_args_and_config(
        args=["--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(tmp_path / "data")]
        + ["--output_dir", str(tmp_path / "grpo"), "--max_steps", "2", *QUICK]
    )
    output = grpo_script.train_grpo(
        script_args, training_args, model_args, target=scripted_target(), judge=scripted_judge()
    )
    log = [e for e in json.loads((output / "training_log.json").read_text()) if "reward" in e]
    assert len(log) == 2
    for entry in log:
        # An untrained model writes no contract: format and judge rewards are 0; every
        # request of the two batches here is scored by the rewards that apply to it.
        assert entry["rewards/format_reward/mean"] == 0.0
        assert entry["rewards/judge_reward/mean"] == 0.0
        assert "rewards/benign_unchanged_reward/mean" in entry
    assert load_backend("transformers", model=str(output)).model is not None  # type: ignore[attr-defined]


def test_example_grpo_config_parses(tmp_path: Path) -> None:
    script_args, training_args, _ = grpo_script.make_parser().parse_args_and_config(
        args=["--config", str(REPO / "examples/train/grpo.yaml"), "--output_dir", str(tmp_path)]
        + ["--bf16", "false"]
    )
    assert script_args.rewards == ["format", "benign_unchanged", "judge"]
    assert script_args.target_model and script_args.judge_model
    assert training_args.reward_weights == [0.5, 0.5, 1.0]
    assert training_args.remove_unused_columns is False
