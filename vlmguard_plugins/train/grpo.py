"""Reinforcement learning of the rewriter with TRL's ``GRPOTrainer``.

Starts from a model (typically the SFT checkpoint) and the synthesised dataset's
prompts.  Rewards (see :mod:`vlmguard_plugins.train.rewards`):

- ``format``: the output follows the contract (a rewrite or the ``<unchanged/>`` marker);
- ``benign_unchanged``: a benign request's text is left as it is, best with the marker;
- ``judge``: the target VLM answers the rewrite and a judge rates it safe and
  helpful (needs ``--target_model`` and ``--judge_model``).

A TRL script like :mod:`vlmguard_plugins.train.sft`::

    vlmguard train grpo --config examples/train/grpo.yaml --model_name_or_path out/rewriter-sft
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .sft import (
    hardware_defaults,
    save_for_inference,
    set_model_init_kwargs,
    write_training_log,
)

__all__ = [
    "GRPO_DEFAULTS",
    "REWARD_NAMES",
    "GRPOScriptArguments",
    "build_grpo_trainer",
    "build_rewards",
    "main",
    "make_parser",
    "prompt_dataset",
    "train_grpo",
]

logger = logging.getLogger("vlmguard_plugins.train")

REWARD_NAMES = ("format", "benign_unchanged", "judge")

GRPO_DEFAULTS: dict[str, Any] = {
    "model_name_or_path": "vlmguard-rewriter-sft",
    "output_dir": "vlmguard-rewriter-grpo",
    "report_to": "none",
    "save_strategy": "no",
    "max_completion_length": 512,
    # The rewards read the dataset's `instruction` and `benign` columns.
    "remove_unused_columns": False,
}


@dataclass
class GRPOScriptArguments:
    """Arguments of ``vlmguard train grpo`` beyond TRL's ``GRPOConfig`` and ``ModelConfig``."""

    dataset_dir: str = field(
        default="data/rewriter",
        metadata={"help": "Folder written by `vlmguard train synth` (metadata.jsonl + images/)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many prompts (for a quick run)."}
    )
    rewards: list[str] = field(
        default_factory=lambda: ["format", "benign_unchanged", "judge"],
        metadata={"help": f"Rewards to use, among {', '.join(REWARD_NAMES)}."},
    )
    target_backend: str = field(default="openai", metadata={"help": "Backend of the target VLM."})
    target_model: str | None = field(
        default=None, metadata={"help": "The target VLM that answers the rewrites (judge reward)."}
    )
    target_base_url: str | None = field(
        default=None, metadata={"help": "Base URL of the target's OpenAI-compatible server."}
    )
    judge_backend: str = field(default="openai", metadata={"help": "Backend of the judge."})
    judge_model: str | None = field(
        default=None, metadata={"help": "The judge that rates answers safe and helpful."}
    )
    judge_base_url: str | None = field(
        default=None, metadata={"help": "Base URL of the judge's OpenAI-compatible server."}
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "With --use_peft, merge the adapters into the saved model."},
    )


def make_parser() -> Any:
    """TRL's argument parser for the three dataclasses, with our defaults."""
    from trl import GRPOConfig, ModelConfig, TrlParser

    # TRL annotates its dataclass types with a NewType that no real class satisfies.
    dataclasses = (GRPOScriptArguments, GRPOConfig, ModelConfig)
    parser = TrlParser(dataclasses, prog="vlmguard train grpo")  # type: ignore[arg-type]
    parser.set_defaults(**GRPO_DEFAULTS, **hardware_defaults())
    return parser


def _backend(name: str, model: str, base_url: str | None) -> Any:
    from ..backends import load_backend

    kwargs: dict[str, Any] = {"model": model}
    if base_url:
        kwargs["base_url"] = base_url
    return load_backend(name, **kwargs)


def build_rewards(
    script_args: GRPOScriptArguments, target: Any = None, judge: Any = None
) -> list[Callable[..., Any]]:
    """The reward functions named in ``script_args.rewards``.

    ``target``/``judge`` backends given here replace those named by the arguments.

    Raises:
        ConfigurationError: an unknown reward, or ``judge`` without both models.
    """
    from .rewards import JudgeReward, benign_unchanged_reward, format_reward
    from .verify import Verifier

    unknown = [name for name in script_args.rewards if name not in REWARD_NAMES]
    if unknown:
        raise ConfigurationError(
            f"unknown reward(s) {', '.join(unknown)}; choose among {', '.join(REWARD_NAMES)}"
        )
    functions: list[Callable[..., Any]] = []
    for name in script_args.rewards:
        if name == "format":
            functions.append(format_reward)
        elif name == "benign_unchanged":
            functions.append(benign_unchanged_reward)
        else:
            if target is None and script_args.target_model:
                target = _backend(
                    script_args.target_backend,
                    script_args.target_model,
                    script_args.target_base_url,
                )
            if judge is None and script_args.judge_model:
                judge = _backend(
                    script_args.judge_backend, script_args.judge_model, script_args.judge_base_url
                )
            if target is None or judge is None:
                raise ConfigurationError(
                    "the judge reward needs a target and a judge model: set --target_model and "
                    "--judge_model (and their --*_base_url), or leave `judge` out of --rewards"
                )
            functions.append(JudgeReward(Verifier(target=target, judge=judge)))
    if not functions:
        raise ConfigurationError("GRPO needs at least one reward (--rewards)")
    return functions


def prompt_dataset(dataset_dir: str, max_samples: int | None = None) -> Any:
    """The synthesised samples as GRPO prompts: the rewriter's prompt without its answer."""
    from .records import load_training_dataset

    dataset = load_training_dataset(dataset_dir)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))

    def to_prompt(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": [m for m in row["messages"] if m["role"] != "assistant"]}

    dataset = dataset.map(to_prompt)
    keep = {"prompt", "images", "instruction", "benign"}
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def build_grpo_trainer(
    script_args: GRPOScriptArguments,
    training_args: Any,
    model_args: Any,
    *,
    target: Any = None,
    judge: Any = None,
) -> Any:
    """The configured ``trl.GRPOTrainer`` (not yet trained)."""
    from trl import GRPOTrainer, get_peft_config

    reward_funcs = build_rewards(script_args, target=target, judge=judge)
    set_model_init_kwargs(model_args, training_args)
    return GRPOTrainer(
        model=model_args.model_name_or_path,
        # Each returns list[float | None], as TRL wants; its invariant list type cannot say so.
        reward_funcs=reward_funcs,  # type: ignore[arg-type]
        args=training_args,
        train_dataset=prompt_dataset(script_args.dataset_dir, script_args.max_samples),
        peft_config=get_peft_config(model_args),
    )


def train_grpo(
    script_args: GRPOScriptArguments,
    training_args: Any,
    model_args: Any,
    *,
    target: Any = None,
    judge: Any = None,
) -> Path:
    """Train with GRPO and save; returns the saved model's folder (with ``training_log.json``)."""
    trainer = build_grpo_trainer(script_args, training_args, model_args, target=target, judge=judge)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output = save_for_inference(trainer, training_args.output_dir, script_args.merge_lora)
    write_training_log(trainer, output)
    logger.info("saved the GRPO-trained rewriter to %s", output)
    return output


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` (or ``sys.argv``) as the TRL script does, then train."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        args=list(argv) if argv is not None else None
    )
    return train_grpo(script_args, training_args, model_args)


if __name__ == "__main__":
    main()
