"""Target sampling settings: temperature, top_p and seed reach served and local targets."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.log import read_eval_log
from inspect_ai.model import ChatMessage, GenerateConfig, Model, ModelOutput, get_model
from PIL import Image
from typer.testing import CliRunner

from vlmguard_plugins.bench.run import run_benchmark
from vlmguard_plugins.cli import app
from vlmguard_plugins.testing import ChatCompletionServer


def _say(model: Model, **config: Any) -> str:
    output = asyncio.run(
        model.generate("Describe a sunny day.", config=GenerateConfig(max_tokens=12, **config))
    )
    return output.completion


def test_local_target_samples_with_the_seed_and_top_p(tiny_model_dir: Path) -> None:
    model = get_model(f"vlmguard-transformers/{tiny_model_dir}", device="cpu")
    greedy = _say(model)
    assert _say(model) == greedy
    first = _say(model, temperature=1.0, seed=1)
    assert _say(model, temperature=1.0, seed=1) == first  # same seed, same answer
    others = {_say(model, temperature=1.0, seed=seed) for seed in (2, 3, 4)}
    assert others - {first}  # another seed, another answer
    assert first != greedy or others != {greedy}  # sampling, not greedy decoding
    # A nucleus this small keeps only the most likely token: sampling becomes greedy.
    assert {_say(model, temperature=1.0, top_p=1e-6, seed=s) for s in (1, 2)} == {greedy}


def test_served_target_receives_top_p_and_seed() -> None:
    with ChatCompletionServer(responder=lambda request: "An answer.", model="the-vlm") as server:
        model = get_model("vlmguard-openai/target/the-vlm", base_url=server.base_url, memoize=False)
        assert _say(model, temperature=0.7, top_p=0.8, seed=5) == "An answer."
        assert _say(model) == "An answer."
    sampled, default = (request.body or {} for request in server.chat_requests)
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.8, 5)
    # Unset, they are left to the server's defaults.
    assert "top_p" not in default and "seed" not in default


class _Recorder:
    def __init__(self) -> None:
        self.configs: list[tuple[str, GenerateConfig]] = []

    def model(self) -> Model:
        def outputs(
            input: list[ChatMessage], tools: Any, tool_choice: Any, config: GenerateConfig
        ) -> ModelOutput:
            self.configs.append((input[-1].text, config))
            return ModelOutput.from_content("mockllm/target", "An answer.")

        return get_model("mockllm/target", custom_outputs=outputs)


def test_siuo_epochs_get_their_own_seeds(data_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "siuo-images"
    images.mkdir()
    for record in json.loads((data_dir / "siuo/siuo_gen.json").read_text()):
        shutil.copy(data_dir / "figstep/images/query_ForbidQI_1_1_6.png", images / record["image"])
    target = _Recorder()
    success, _ = run_benchmark(
        ["siuo"],
        [target.model()],
        ["none"],
        data_dir=data_dir,
        log_dir=tmp_path / "logs",
        image_dirs={"siuo": str(images)},
        limit=2,
        top_p=0.9,
        seed=7,
        display="none",
        retry_attempts=0,
    )
    assert success
    by_question: dict[str, list[GenerateConfig]] = {}
    for text, config in target.configs:
        by_question.setdefault(text, []).append(config)
    assert len(by_question) == 2
    for configs in by_question.values():
        # Three responses per item, each its own seed; SIUO's published temperature 1.0.
        assert sorted(c.seed for c in configs) == [7, 8, 9]  # type: ignore[type-var]
        assert {(c.temperature, c.top_p) for c in configs} == {(1.0, 0.9)}


def test_served_target_gets_the_settings_of_every_task(data_dir: Path, tmp_path: Path) -> None:
    target = _Recorder()
    success, _ = run_benchmark(
        ["figstep"],
        [target.model()],
        ["none"],
        data_dir=data_dir,
        log_dir=tmp_path,
        limit=2,
        temperature=0.0,
        seed=3,
        display="none",
        retry_attempts=0,
    )
    assert success
    assert [(c.temperature, c.top_p, c.seed) for _, c in target.configs] == [(0.0, None, 3)] * 2


def test_cli_sampling_and_kind_options(data_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    tiny = json.loads((data_dir / "mm-safetybench/TinyVersion_ID_List.json").read_text())
    for entry in tiny:
        if not (
            data_dir / "mm-safetybench/processed_questions" / f"{entry['Scenario']}.json"
        ).exists():
            continue
        folder = images / entry["Scenario"] / "SD"
        folder.mkdir(parents=True)
        for qid in entry["Sampled_ID_List"]:
            Image.new("RGB", (8, 8), "white").save(folder / f"{qid}.jpg")
    logs = tmp_path / "logs"
    result = CliRunner().invoke(
        app,
        [
            "bench", "run",
            "--task", "mm_safetybench:tiny",
            "--target", "mockllm/model",
            "--defense", "none",
            "--kind", "SD",
            "--temperature", "0.7",
            "--top-p", "0.8",
            "--seed", "11",
            "--image-dir", f"mm_safetybench={images}",
            "--data-dir", str(data_dir),
            "--log-dir", str(logs),
            "--display", "none",
            "--retry-attempts", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [log_file] = list(logs.glob("*.eval"))
    log = read_eval_log(str(log_file))
    assert log.samples is not None
    assert {s.metadata["image_kind"] for s in log.samples} == {"SD"}  # only SD images exist
    assert len(log.samples) == 10 + 13
    config = log.plan.config
    assert (config.temperature, config.top_p, config.seed) == (0.7, 0.8, 11)


@pytest.mark.parametrize(("option", "value"), [("--top-p", "1.5"), ("--kind", "SDX")])
def test_cli_refuses_bad_sampling_or_kind(
    data_dir: Path, tmp_path: Path, option: str, value: str
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench", "run",
            "--task", "mm_safetybench:tiny" if option == "--kind" else "figstep",
            "--target", "mockllm/model",
            "--defense", "none",
            option, value,
            "--data-dir", str(data_dir),
            "--log-dir", str(tmp_path),
            "--display", "none",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "ConfigurationError" in result.output
    assert ("top_p" if option == "--top-p" else "SD, TYPO, SD_TYPO, all") in result.output
