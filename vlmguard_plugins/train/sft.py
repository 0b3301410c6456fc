"""Supervised fine-tuning of the rewriter with TRL's ``SFTTrainer``.

A TRL script: three dataclasses of arguments (:class:`SFTScriptArguments`, TRL's
``SFTConfig`` and ``ModelConfig``), read from a YAML file (``--config``) and the
command line, a trainer, nothing more::

    vlmguard train sft --config examples/train/sft.yaml --output_dir out/rewriter-sft
    accelerate launch --config_file examples/train/accelerate/deepspeed_zero2.yaml \\
        -m vlmguard_plugins.train.sft --config examples/train/sft.yaml

Only the assistant turn (the output contract) is in the loss.  With ``--use_peft``
LoRA adapters are trained and, by default, merged before saving, so the result
loads with ``load_backend("transformers", model=output_dir)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL",
    "SFT_DEFAULTS",
    "SFTScriptArguments",
    "build_sft_trainer",
    "hardware_defaults",
    "main",
    "make_parser",
    "save_for_inference",
    "set_model_init_kwargs",
    "train_sft",
    "write_training_log",
]

logger = logging.getLogger("vlmguard_plugins.train")

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"

# Our defaults on top of TRL's; a YAML file or a flag still overrides each of them.
SFT_DEFAULTS: dict[str, Any] = {
    "model_name_or_path": DEFAULT_MODEL,
    "output_dir": "vlmguard-rewriter-sft",
    "assistant_only_loss": True,
    "report_to": "none",
    "save_strategy": "no",
}


@dataclass
class SFTScriptArguments:
    """Arguments of ``vlmguard train sft`` beyond TRL's ``SFTConfig`` and ``ModelConfig``."""

    dataset_dir: str = field(
        default="data/rewriter",
        metadata={"help": "Folder written by `vlmguard train synth` (metadata.jsonl + images/)."},
    )
    eval_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of the samples held out for evaluation (0 trains on all)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Train on at most this many samples (for a quick run)."}
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "With --use_peft, merge the adapters into the saved model."},
    )


def hardware_defaults() -> dict[str, Any]:
    """bf16 where the GPU supports it, fp32 elsewhere (TRL's bf16 default fails on CPU)."""
    import torch

    return {"bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())}


def make_parser() -> Any:
    """TRL's argument parser for the three dataclasses, with our defaults."""
    from trl import ModelConfig, SFTConfig, TrlParser

    # TRL annotates its dataclass types with a NewType that no real class satisfies.
    dataclasses = (SFTScriptArguments, SFTConfig, ModelConfig)
    parser = TrlParser(dataclasses, prog="vlmguard train sft")  # type: ignore[arg-type]
    parser.set_defaults(**SFT_DEFAULTS, **hardware_defaults())
    return parser


def set_model_init_kwargs(model_args: Any, training_args: Any) -> None:
    """Pass ``ModelConfig``'s loading settings to the trainer, as TRL's own scripts do."""
    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs


def _split_dataset(dataset: Any, eval_fraction: float, seed: int) -> tuple[Any, Any | None]:
    """A train split and, when ``eval_fraction`` > 0, an evaluation split."""
    if eval_fraction <= 0 or len(dataset) < 2:
        return dataset, None
    parts = dataset.train_test_split(test_size=eval_fraction, seed=seed)
    return parts["train"], parts["test"]


def save_for_inference(trainer: Any, output_dir: str, merge_lora: bool) -> Path:
    """Save the model and processor so ``load_backend("transformers", model=...)`` loads them.

    LoRA adapters are merged first when ``merge_lora``; otherwise the trainer saves
    (which gathers sharded DeepSpeed/FSDP weights, and keeps bare adapters as such).
    """
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel) and merge_lora:
        merged = model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(output_dir)
            trainer.processing_class.save_pretrained(output_dir)
        trainer.accelerator.wait_for_everyone()
    else:
        trainer.save_model(output_dir)
    return Path(output_dir)


def build_sft_trainer(script_args: SFTScriptArguments, training_args: Any, model_args: Any) -> Any:
    """The configured ``trl.SFTTrainer`` on the synthesised dataset (not yet trained)."""
    from transformers import IntervalStrategy
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    from .records import load_training_dataset

    dataset = load_training_dataset(script_args.dataset_dir)
    if script_args.max_samples is not None:
        dataset = dataset.select(range(min(script_args.max_samples, len(dataset))))
    train_dataset, eval_dataset = _split_dataset(
        dataset, script_args.eval_fraction, training_args.seed
    )
    if eval_dataset is not None and training_args.eval_strategy == IntervalStrategy.NO:
        training_args.eval_strategy = IntervalStrategy.EPOCH
    set_model_init_kwargs(model_args, training_args)
    return SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=_conversation_columns(train_dataset),
        eval_dataset=_conversation_columns(eval_dataset) if eval_dataset is not None else None,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )


def _conversation_columns(dataset: Any) -> Any:
    from .records import with_unchanged_marker

    def marker_targets(messages: list[dict[str, Any]], instruction: str) -> dict[str, Any]:
        return {"messages": with_unchanged_marker(messages, instruction)}

    if "instruction" in dataset.column_names:
        # Only the two text columns go in, so the images are not decoded for this.
        dataset = dataset.map(marker_targets, input_columns=["messages", "instruction"])
    # The trainer needs only the conversation and its images.
    keep = {"messages", "images"}
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def train_sft(script_args: SFTScriptArguments, training_args: Any, model_args: Any) -> Path:
    """Fine-tune and save; returns the folder of the saved model.

    The folder also holds ``training_log.json``: the trainer's log history (losses).
    """
    trainer = build_sft_trainer(script_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output = save_for_inference(trainer, training_args.output_dir, script_args.merge_lora)
    write_training_log(trainer, output)
    logger.info("saved the fine-tuned rewriter to %s", output)
    return output


def write_training_log(trainer: Any, output: Path) -> None:
    """Keep the trainer's log history (loss per logging step) beside the model."""
    import json

    if trainer.accelerator.is_main_process:
        (output / "training_log.json").write_text(
            json.dumps(trainer.state.log_history, indent=1) + "\n", encoding="utf-8"
        )


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` (or ``sys.argv``) as the TRL script does, then train."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        args=list(argv) if argv is not None else None
    )
    return train_sft(script_args, training_args, model_args)


if __name__ == "__main__":
    main()
