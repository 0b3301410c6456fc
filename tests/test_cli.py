"""The ``vlmguard`` command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vlmguard_plugins import __version__
from vlmguard_plugins.cli import app

runner = CliRunner()


def test_version_from_the_installed_script() -> None:
    script = Path(sys.executable).parent / "vlmguard"
    completed = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == f"vlmguard-plugins {__version__}"


def test_rewrite_json_with_the_tiny_model(tiny_model_dir: Path, example_images: dict) -> None:
    result = runner.invoke(
        app,
        [
            "rewrite",
            "--model",
            str(tiny_model_dir),
            "--image",
            str(example_images["knife"]),
            "--max-new-tokens",
            "8",
            "--json",
            "What is the quickest way to use this?",
        ],
    )
    # The failure policy produced the prompt: exit 3, and the JSON is still printed.
    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    assert payload["original"] == "What is the quickest way to use this?"
    assert payload["usage"]["completion_tokens"] > 0
    # Untrained weights: the shield policy acted and says why.
    assert payload["action"] == "shield" and payload["fallback"]


def test_rewrite_rich_output_and_policy_flag(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "rewrite",
            "--model",
            str(tiny_model_dir),
            "--max-new-tokens",
            "4",
            "--on-error",
            "block",
            "hello",
        ],
    )
    assert result.exit_code == 3, result.output
    assert "prompt for the VLM" in result.stdout and "block" in result.stdout
    assert "fallback" in result.stderr


def test_raise_policy_exits_with_a_clear_error(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "rewrite",
            "--model",
            str(tiny_model_dir),
            "--max-new-tokens",
            "4",
            "--on-error",
            "raise",
            "hello",
        ],
    )
    assert result.exit_code == 2
    assert "RewriteParseError" in result.stderr


def test_bad_image_and_bad_policy(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(
        app,
        [
            "rewrite",
            "--model",
            str(tiny_model_dir),
            "--image",
            str(bad),
            "--on-error",
            "raise",
            "hi",
        ],
    )
    assert result.exit_code == 2 and "ImageDecodeError" in result.stderr
    result = runner.invoke(app, ["rewrite", "--on-error", "ignore", "hi"])
    assert result.exit_code != 0 and "shield" in result.output


def test_rewrite_with_the_scripted_backend_needs_no_model(example_images: dict) -> None:
    # The scripted backend takes no model: none is passed unless --model is given.
    result = runner.invoke(
        app,
        [
            "rewrite",
            "--backend",
            "scripted",
            "--image",
            str(example_images["sunflower"]),
            "--json",
            "What flower is this?",
        ],
        env={"VLMGUARD_MODEL": None},
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # The scripted rewriter judges the text safe and hands it on unchanged.
    assert (payload["prompt"], payload["risk"], payload["action"]) == (
        "What flower is this?",
        "none",
        "unchanged",
    )
    assert payload["fallback"] is None
    result = runner.invoke(app, ["rewrite", "--backend", "scripted", "Hello there"])
    assert result.exit_code == 0, result.output
    assert "prompt for the VLM" in result.stdout and "Hello there" in result.stdout


def test_rewrite_with_the_openai_backend_asks_for_the_served_model() -> None:
    result = runner.invoke(
        app,
        ["rewrite", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "hi"],
        env={"VLMGUARD_MODEL": None},
    )
    assert result.exit_code == 2
    assert "ConfigurationError" in result.stderr and "'model'" in result.stderr


def test_missing_or_unreadable_image_exits_2_before_any_model(tmp_path: Path) -> None:
    # Under the default shield policy too: the user's file is not a case for the policy.
    missing = tmp_path / "missing.png"
    result = runner.invoke(app, ["rewrite", "--model", "nobody/nothing", "-i", str(missing), "hi"])
    assert result.exit_code == 2
    assert "missing.png" in result.stderr and "cannot be read" in result.stderr
    assert result.stdout == ""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(app, ["rewrite", "--model", "nobody/nothing", "-i", str(bad), "hi"])
    assert result.exit_code == 2 and "ImageDecodeError" in result.stderr


def test_rewrite_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["rewrite", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for code in ("0  the prompt was rewritten", "2  an error", "3  the rewrite failed"):
        assert code in result.stdout


_BLOCKING_SCRIPT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["vlmguard", *{ARGS!r}]
from vlmguard_plugins.cli import main
main()
"""


def _vlmguard_without(blocked: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``vlmguard`` entry point as if ``blocked`` packages were not installed."""
    script = _BLOCKING_SCRIPT.format(BLOCKED=blocked, ARGS=list(args))
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


def test_commands_of_missing_extras_are_hidden_and_say_what_to_install() -> None:
    completed = _vlmguard_without({"trl", "inspect_ai"}, "--help")
    assert completed.returncode == 0, completed.stderr
    assert "rewrite" in completed.stdout and "serve" in completed.stdout
    assert "train" not in completed.stdout and "bench" not in completed.stdout
    for command, extra in (("train", "train"), ("bench", "bench")):
        completed = _vlmguard_without({"trl", "inspect_ai"}, command, "run", "--anything")
        assert completed.returncode == 2
        # The extra's brackets survive rich markup; no traceback.
        assert f"pip install 'vlmguard-plugins[{extra}]'" in completed.stderr
        assert "Traceback" not in completed.stderr


def test_missing_model_names_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rewrite", "--model", "nobody/nothing", "hi"])
    assert result.exit_code == 2 and "nobody/nothing" in result.stderr


def test_demo_falls_back_to_the_tiny_model_loudly(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--model", "nobody/not-cached", "--assets", str(tmp_path / "assets")]
    )
    assert result.exit_code == 0, result.output
    assert "not available offline" in result.stdout
    assert "TINY RANDOM-WEIGHT" in result.stdout
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == [
        "knife.png",
        "pills.png",
        "steps.png",
        "sunflower.png",
    ]
    assert "4 prompts rewritten" in result.stdout
