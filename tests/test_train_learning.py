"""The learning check: SFT really teaches the output contract, and GRPO then scores real rewrites.

The tiny random model never writes the contract; after a bounded SFT run on
synthesised samples its greedy outputs, loaded the way inference loads a model,
follow it for most training prompts.  The rates are printed (``pytest -s``) and
recorded in docs/training.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlmguard_plugins.testing.training import (
    scripted_judge,
    scripted_target,
    scripted_teacher,
    write_example_source,
)
from vlmguard_plugins.train import SynthConfig, synthesize
from vlmguard_plugins.train import grpo as grpo_script
from vlmguard_plugins.train import sft as sft_script
from vlmguard_plugins.train.evaluate import ContractReport, contract_rate
from vlmguard_plugins.train.records import read_metadata

# Minutes of training: deselect with `-m "not slow"` for a quick loop; CI runs it.
pytestmark = pytest.mark.slow

# Bounded: one to two minutes of training on 2 busy CPU cores.
LEARNING_STEPS = 200
LEARNING_RATE = "5e-3"
MAX_NEW_TOKENS = 160


@dataclass
class Learned:
    dataset: Path
    model: Path
    before: ContractReport
    after: ContractReport


@pytest.fixture(scope="module")
def learned(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Learned:
    folder = tmp_path_factory.mktemp("learning")
    source = write_example_source(folder, 8, benign=2)
    synthesize(
        SynthConfig(input=source, output=folder / "data", max_benign_fraction=None),
        teacher=scripted_teacher(),
        target=scripted_target(),
    )
    before = contract_rate(tiny_model_dir, folder / "data", max_new_tokens=MAX_NEW_TOKENS)
    model = sft_script.main(
        ["--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(folder / "data")]
        + ["--output_dir", str(folder / "model"), "--max_steps", str(LEARNING_STEPS)]
        + ["--learning_rate", LEARNING_RATE, "--warmup_steps", "10"]
        + ["--per_device_train_batch_size", "2", "--gradient_checkpointing", "false"]
        + ["--logging_steps", "10", "--bf16", "false", "--seed", "0"]
    )
    after = contract_rate(model, folder / "data", max_new_tokens=MAX_NEW_TOKENS)
    return Learned(dataset=folder / "data", model=model, before=before, after=after)


def test_sft_makes_the_tiny_model_follow_the_output_contract(learned: Learned) -> None:
    print(
        f"\noutput contract followed on {learned.after.total} training prompts: "
        f"before SFT {learned.before.rate:.0%}, "
        f"after {LEARNING_STEPS} steps {learned.after.rate:.0%}"
    )
    assert learned.before.total == learned.after.total == 10
    assert learned.before.rate < 0.5
    assert learned.after.rate >= 0.8, learned.after.failures
    losses = [
        e["loss"]
        for e in json.loads((learned.model / "training_log.json").read_text())
        if "loss" in e
    ]
    assert losses[-1] < losses[0] / 4


def test_grpo_from_the_learned_rewriter_scores_its_rewrites(
    learned: Learned, tmp_path: Path
) -> None:
    target, judge = scripted_target("General safety advice."), scripted_judge()
    script_args, training_args, model_args = grpo_script.make_parser().parse_args_and_config(
        args=["--model_name_or_path", str(learned.model), "--dataset_dir", str(learned.dataset)]
        + ["--output_dir", str(tmp_path / "grpo"), "--max_steps", "2", "--max_samples", "4"]
        + ["--per_device_train_batch_size", "2", "--num_generations", "2"]
        + ["--max_completion_length", str(MAX_NEW_TOKENS), "--temperature", "0.3"]
        + ["--bf16", "false", "--logging_steps", "1", "--gradient_checkpointing", "false"]
    )
    output = grpo_script.train_grpo(
        script_args, training_args, model_args, target=target, judge=judge
    )
    log = [e for e in json.loads((output / "training_log.json").read_text()) if "reward" in e]
    assert max(e["rewards/format_reward/mean"] for e in log) > 0
    assert max(e["rewards/judge_reward/mean"] for e in log) > 0
    # The target was asked the rewrites the policy wrote, not the user's raw text.
    rows = read_metadata(learned.dataset)
    raw_harmful = {row["instruction"] for row in rows if not row["benign"]}
    asked = [call.request.messages[-1]["content"][-1]["text"] for call in target.calls]
    assert asked and not raw_harmful & set(asked)
    assert all(len(call.images) == 1 for call in target.calls)
