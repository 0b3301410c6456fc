"""SFT with TRL on the tiny Qwen2.5-VL: a few steps, assistant-only loss, reloadable checkpoints."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmguard_plugins import Rewriter, load_backend
from vlmguard_plugins.parsing import format_output, parse_output
from vlmguard_plugins.testing.training import (
    scripted_target,
    scripted_teacher,
    write_example_source,
)
from vlmguard_plugins.train import SynthConfig, synthesize
from vlmguard_plugins.train import sft as sft_script
from vlmguard_plugins.train.records import read_metadata
from vlmguard_plugins.types import Risk

REPO = Path(__file__).resolve().parents[1]

# Small, CPU-friendly settings for every run in this file.
QUICK = [
    "--per_device_train_batch_size", "2",
    "--bf16", "false",
    "--gradient_checkpointing", "false",
    "--logging_steps", "1",
    "--dataloader_num_workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    source = write_example_source(folder, 4, benign=1)
    synthesize(
        SynthConfig(input=source, output=folder / "out", max_benign_fraction=None),
        teacher=scripted_teacher(),
        target=scripted_target(),
    )
    return folder / "out"


def _losses(output: Path) -> list[float]:
    log = json.loads((output / "training_log.json").read_text())
    return [entry["loss"] for entry in log if "loss" in entry]


def test_cli_sft_trains_and_the_checkpoint_serves(
    tiny_model_dir: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    from vlmguard_plugins.cli import app

    output = tmp_path / "rewriter"
    result = CliRunner().invoke(
        app,
        ["train", "sft", "--model_name_or_path", str(tiny_model_dir)]
        + ["--dataset_dir", str(dataset_dir), "--output_dir", str(output), "--max_steps", "3"]
        + QUICK,
    )
    assert result.exit_code == 0, result.output
    assert f"saved the trained rewriter to {output}" in result.output
    losses = _losses(output)
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)

    # The checkpoint is a model folder the transformers backend loads, as users will.
    row = read_metadata(dataset_dir)[0]
    with Rewriter(backend=load_backend("transformers", model=str(output)), max_new_tokens=8) as rw:
        served = rw.rewrite(row["instruction"], images=[str(dataset_dir / row["file_names"][0])])
    assert served.usage.completion_tokens > 0
    assert served.raw is not None


def test_only_the_assistant_turn_is_in_the_loss(tiny_model_dir: Path, dataset_dir: Path) -> None:
    script_args, training_args, model_args = sft_script.make_parser().parse_args_and_config(
        args=["--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(dataset_dir)]
        + ["--output_dir", "unused", *QUICK]
    )
    assert training_args.assistant_only_loss  # our default
    trainer = sft_script.build_sft_trainer(script_args, training_args, model_args)
    example = trainer.train_dataset[0]
    batch = trainer.data_collator([example])
    labels = batch["labels"][0]
    trained = labels[labels != -100]
    tokenizer = trainer.processing_class.tokenizer
    text = tokenizer.decode(trained)
    target = example["messages"][-1]["content"][0]["text"]
    # Exactly the output contract and the end-of-turn token: no system prompt, no user text.
    assert text == target + "<|im_end|>"
    parsed = parse_output(text)
    assert parsed.rewrite or parsed.unchanged
    assert "pixel_values" in batch and batch["input_ids"].shape[1] > len(trained)


def test_benign_targets_train_the_unchanged_marker(
    tiny_model_dir: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    # A dataset made before the marker existed: its benign targets copy the text.
    older = tmp_path / "older"
    shutil.copytree(dataset_dir, older)
    rows = read_metadata(older)
    for row in rows:
        if row["benign"]:
            parsed = parse_output(row["messages"][-1]["content"][0]["text"])
            copy = format_output(parsed.analysis, Risk.NONE, row["instruction"])
            row["messages"][-1]["content"][0]["text"] = copy
    (older / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert sum(row["benign"] for row in rows) == 1

    for folder in (dataset_dir, older):
        script_args, training_args, model_args = sft_script.make_parser().parse_args_and_config(
            args=["--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(folder)]
            + ["--output_dir", "unused", *QUICK]
        )
        trainer = sft_script.build_sft_trainer(script_args, training_args, model_args)
        targets = [
            parse_output(example["messages"][-1]["content"][0]["text"])
            for example in trainer.train_dataset
        ]
        assert [t.unchanged for t in targets] == [row["benign"] for row in rows]


def test_lora_adapters_are_merged_into_a_loadable_model(
    tiny_model_dir: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "lora"
    sft_script.main(
        ["--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(dataset_dir)]
        + ["--output_dir", str(output), "--max_steps", "2", "--use_peft", "--lora_r", "4"]
        + ["--lora_target_modules", "q_proj", "v_proj", "--eval_fraction", "0.2", *QUICK]
    )
    assert not (output / "adapter_config.json").exists()
    assert all(math.isfinite(loss) for loss in _losses(output))
    log = json.loads((output / "training_log.json").read_text())
    assert any(math.isfinite(entry.get("eval_loss", math.nan)) for entry in log)
    backend = load_backend("transformers", model=str(output))
    names = [name for name, _ in backend.model.named_parameters()]  # type: ignore[attr-defined]
    assert not any("lora" in name for name in names)


def test_sft_without_a_dataset_says_how_to_make_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    from vlmguard_plugins.cli import app

    result = CliRunner().invoke(
        app,
        ["train", "sft", "--model_name_or_path", str(tiny_model_dir)]
        + ["--dataset_dir", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "TrainingDataError" in result.output and "vlmguard train synth" in result.output


def test_example_sft_configs_parse(tmp_path: Path) -> None:
    for name in ("sft.yaml", "sft_lora.yaml"):
        script_args, training_args, model_args = sft_script.make_parser().parse_args_and_config(
            args=["--config", str(REPO / "examples/train" / name), "--output_dir", str(tmp_path)]
            + ["--bf16", "false"]  # the examples are for GPUs; this machine may have none
        )
        assert training_args.assistant_only_loss
        assert model_args.model_name_or_path.startswith("Qwen/Qwen2.5-VL")
        assert script_args.dataset_dir == "data/rewriter"
        assert model_args.use_peft == (name == "sft_lora.yaml")


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_configs_load(name: str) -> None:
    from accelerate.commands.config.config_args import (  # type: ignore[import-untyped]
        load_config_from_file,
    )

    config = load_config_from_file(str(REPO / f"examples/train/accelerate/{name}.yaml"))
    assert config.mixed_precision == "bf16" and config.num_processes == 8
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
