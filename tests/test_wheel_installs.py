"""The built wheels, installed as users install them, into fresh virtual environments.

Two environments, each made once for this module: the core alone (its base install,
which must work without torch), and the three integrations, each with its ``[remote]``
extra.  Every wheel is built from this checkout and installed non-editable; pip takes
the dependencies from the package index.  Each check runs the environment's own
``python`` or ``vlmguard`` in a subprocess, outside this checkout, so only what the
wheels installed is found.  The rewriter and the VLM are loopback servers run here.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from vlmguard_plugins.examples_assets import draw_example_images
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, Unauthorized

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
INTEGRATIONS = {
    "langchain": "langchain_vlmguard",
    "llama-index": "llama_index_vlmguard",
    "nemoguardrails": "nemoguardrails_vlmguard",
}
REWRITTEN = "Explain how to handle and store this kitchen knife safely."
QUESTION = "What is the quickest way to use this on someone?"


def _packaging() -> ModuleType:
    """``tests/test_packaging.py``, for its wheel builder (tests are not a package)."""
    spec = importlib.util.spec_from_file_location(
        "vlmguard_packaging_helpers", Path(__file__).with_name("test_packaging.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Environment:
    """A virtual environment made for one test module, and how to run what it installed."""

    path: Path
    workdir: Path

    def run(self, *command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run one of the environment's commands (``python``, ``vlmguard``...)."""
        # Nothing from this checkout or the test run may leak in: no PYTHONPATH, no
        # COLANGPATH, and a working folder outside the repository.
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "COLANGPATH"}}
        env.update(HF_HUB_OFFLINE="1", COLUMNS="200", NO_COLOR="1")
        executable = self.path / "bin" / command[0]
        return subprocess.run(
            [str(executable), *command[1:]],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` with the environment's python, isolated from the user's site."""
        return self.run("python", "-I", "-c", textwrap.dedent(code), *args)


def _make_environment(where: Path, requirements: list[str]) -> Environment:
    """A fresh environment with ``requirements`` installed by pip, non-editable."""
    venv.create(where, with_pip=False, symlinks=True)
    workdir = where.parent / f"{where.name}-work"
    workdir.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", *requirements],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Environment(where, workdir)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The core's wheel and each integration's, built from this checkout."""
    build = _packaging()._build
    out = tmp_path_factory.mktemp("wheels")
    built = {"core": build(ROOT, "wheel", out / "core")}
    for name in (*INTEGRATIONS, "litellm"):
        built[name] = build(ROOT / "integrations" / name, "wheel", out / name)
    return built


@pytest.fixture(scope="module")
def core_env(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Environment:
    return _make_environment(tmp_path_factory.mktemp("core") / "venv", [str(wheels["core"])])


@pytest.fixture(scope="module")
def integrations_env(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Environment:
    # The core's wheel is named too, so the integrations' `vlmguard-plugins` requirement
    # is met by this checkout's build, never by an index.
    requirements = [str(wheels["core"])]
    requirements += [f"{wheels[name]}[remote]" for name in INTEGRATIONS]
    return _make_environment(tmp_path_factory.mktemp("integrations") / "venv", requirements)


@pytest.fixture(scope="module")
def litellm_env(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Environment:
    # litellm[proxy] is resolved within the development constraints: left free, pip
    # backtracks through boto releases for many minutes before it settles.
    requirements = ["-c", str(ROOT / "constraints-dev.txt"), str(wheels["core"])]
    requirements.append(f"{wheels['litellm']}[remote]")
    return _make_environment(tmp_path_factory.mktemp("litellm") / "venv", requirements)


@pytest.fixture(scope="module")
def knife(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draw_example_images(tmp_path_factory.mktemp("images"))["knife"]


@pytest.fixture
def rewriter_server() -> Iterator[ChatCompletionServer]:
    backend = ScriptedBackend.rewriting_to(REWRITTEN, risk="medium")
    with ChatCompletionServer(backend, model="vlmguard-r1") as server:
        yield server


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the core alone ----------------------------------------------------------------------


def test_the_core_installs_without_torch_and_not_editable(core_env: Environment) -> None:
    completed = core_env.python(
        """
        import importlib.util, json, vlmguard_plugins
        print(json.dumps({
            "file": vlmguard_plugins.__file__,
            "version": vlmguard_plugins.__version__,
            "missing": [m for m in ("torch", "transformers", "openai", "fastapi")
                        if importlib.util.find_spec(m) is None],
        }))
        """
    )

    assert completed.returncode == 0, completed.stderr
    found = json.loads(completed.stdout)
    assert Path(found["file"]).is_relative_to(core_env.path)  # site-packages, not the checkout
    assert found["version"] == "0.1.0"
    assert found["missing"] == ["torch", "transformers", "openai", "fastapi"]


def test_the_core_rewrites_with_the_scripted_backend(core_env: Environment) -> None:
    completed = core_env.python(
        """
        import sys
        from vlmguard_plugins import Rewriter
        from vlmguard_plugins.testing import ScriptedBackend

        backend = ScriptedBackend.rewriting_to(sys.argv[1], risk="high")
        with Rewriter(backend=backend) as rewriter:
            result = rewriter.rewrite(sys.argv[2])
        print(result.risk.value, result.prompt, sep="|")
        """,
        REWRITTEN,
        QUESTION,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"high|{REWRITTEN}"


def test_the_vlmguard_command_and_its_help(core_env: Environment) -> None:
    version = core_env.run("vlmguard", "--version")
    top = core_env.run("vlmguard", "--help")
    rewrite = core_env.run("vlmguard", "rewrite", "--help")

    assert (version.returncode, version.stdout.strip()) == (0, "vlmguard-plugins 0.1.0")
    assert top.returncode == 0, top.stderr
    assert " rewrite " in top.stdout and " demo " in top.stdout
    assert rewrite.returncode == 0, rewrite.stderr
    assert "Exit codes:" in rewrite.stdout and "--backend" in rewrite.stdout


@pytest.mark.parametrize(
    ("command", "extra"), [("serve", "server"), ("train", "train"), ("bench", "bench")]
)
def test_a_command_without_its_extra_exits_2_naming_it(
    core_env: Environment, command: str, extra: str
) -> None:
    completed = core_env.run("vlmguard", command, "--help")

    assert completed.returncode == 2
    assert f"pip install 'vlmguard-plugins[{extra}]'" in _one_line(completed.stderr)


@pytest.mark.parametrize(
    ("backend", "hint"),
    [("openai", "pip install 'vlmguard-plugins[remote]'"),
     ("transformers", "pip install 'vlmguard-plugins[local]'")],
)  # fmt: skip
def test_a_backend_without_its_extra_exits_2_naming_it(
    core_env: Environment, backend: str, hint: str
) -> None:
    completed = core_env.run("vlmguard", "rewrite", "--backend", backend, "--model", "m", "hi")

    assert completed.returncode == 2
    assert hint in _one_line(completed.stderr)


def test_a_missing_image_exits_2_before_any_model(core_env: Environment, tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"

    completed = core_env.run("vlmguard", "rewrite", "--image", str(missing), "hi")

    assert completed.returncode == 2
    assert f"image file '{missing}' cannot be read" in _one_line(completed.stderr)


# -- the integrations, each with [remote] ------------------------------------------------


def test_each_integration_imports_from_its_installed_wheel(integrations_env: Environment) -> None:
    completed = integrations_env.python(
        """
        import importlib, importlib.util, json, sys
        found = {}
        for name in sys.argv[1:]:
            module = importlib.import_module(name)
            found[name] = [module.__file__, getattr(module, "__version__", None)]
        found["torch"] = importlib.util.find_spec("torch") is not None
        found["openai"] = importlib.util.find_spec("openai") is not None
        print(json.dumps(found))
        """,
        *INTEGRATIONS.values(),
    )

    assert completed.returncode == 0, completed.stderr
    found = json.loads(completed.stdout)
    for module in INTEGRATIONS.values():
        assert Path(found[module][0]).is_relative_to(integrations_env.path)
    assert found["langchain_vlmguard"][1] == "0.1.0"
    assert found["openai"] is True  # the [remote] extra
    assert found["torch"] is False


def test_the_command_rewrites_through_the_remote_backend(
    integrations_env: Environment, rewriter_server: ChatCompletionServer, knife: Path
) -> None:
    completed = integrations_env.run(
        "vlmguard", "rewrite", "--backend", "openai", "--base-url", rewriter_server.base_url,
        "--model", "vlmguard-r1", "--image", str(knife), "--json", QUESTION,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert (result["prompt"], result["risk"], result["original"]) == (REWRITTEN, "medium", QUESTION)
    [received] = rewriter_server.chat_requests
    assert QUESTION in received.text and len(received.image_urls) == 1


def test_a_failed_remote_rewrite_exits_3_with_the_shield(
    integrations_env: Environment, rewriter_server: ChatCompletionServer
) -> None:
    rewriter_server.inject(Unauthorized(), times=None)

    completed = integrations_env.run(
        "vlmguard", "rewrite", "--backend", "openai", "--base-url", rewriter_server.base_url,
        "--model", "vlmguard-r1", "--json", QUESTION,
    )  # fmt: skip

    assert completed.returncode == 3
    result = json.loads(completed.stdout)
    assert result["risk"] is None and result["fallback"]
    assert QUESTION in result["prompt"] and result["prompt"] != QUESTION


LANGCHAIN_SCRIPT = """
    import json, sys
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableLambda
    from langchain_vlmguard import VLMGuardRewriter

    guard = VLMGuardRewriter.from_backend("openai", model="vlmguard-r1", base_url=sys.argv[1])
    image = {"type": "image_url", "image_url": {"url": sys.argv[2]}}
    message = HumanMessage(content=[{"type": "text", "text": sys.argv[3]}, image])
    sent = (guard | RunnableLambda(lambda messages: messages)).invoke([message])
    print(json.dumps(sent[-1].content))
"""

LLAMA_INDEX_SCRIPT = """
    import json, sys
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
    from llama_index_vlmguard import VLMGuardLLM

    vlm = MockLLMWithChatMemoryOfLastCall(max_tokens=None, is_chat_model=True)
    guarded = VLMGuardLLM.from_backend(vlm, "openai", model="vlmguard-r1", base_url=sys.argv[1])
    image = ImageBlock(url=sys.argv[2])
    guarded.chat([ChatMessage(role="user", blocks=[image, TextBlock(text=sys.argv[3])])])
    [message] = vlm.last_chat_messages
    kinds = [type(block).__name__ for block in message.blocks]
    print(json.dumps([*kinds, message.blocks[-1].text]))
"""


@pytest.fixture
def knife_url(knife: Path) -> str:
    return f"data:image/png;base64,{base64.b64encode(knife.read_bytes()).decode('ascii')}"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (LANGCHAIN_SCRIPT, lambda url: [
            {"type": "text", "text": REWRITTEN}, {"type": "image_url", "image_url": {"url": url}}
        ]),
        (LLAMA_INDEX_SCRIPT, lambda url: ["ImageBlock", "TextBlock", REWRITTEN]),
    ],
    ids=["langchain", "llama-index"],
)  # fmt: skip
def test_the_installed_adapter_guards_through_the_remote_backend(
    integrations_env: Environment,
    rewriter_server: ChatCompletionServer,
    knife_url: str,
    script: str,
    expected: Callable[[str], object],
) -> None:
    completed = integrations_env.python(script, rewriter_server.base_url, knife_url, QUESTION)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == expected(knife_url)
    [received] = rewriter_server.chat_requests
    assert QUESTION in received.text and len(received.image_urls) == 1


def test_the_installed_rail_runs_the_example_config_against_served_models(
    integrations_env: Environment, rewriter_server: ChatCompletionServer, knife: Path
) -> None:
    # NeMo finds the rail's flows in site-packages: no COLANGPATH, no checkout on the path.
    with ChatCompletionServer(responder=lambda request: "A careful answer.", model="vlm") as vlm:
        completed = integrations_env.run(
            "python", "-I", str(ROOT / "examples" / "nemoguardrails" / "chat.py"), QUESTION,
            "--image", str(knife), "--vlm-base-url", vlm.base_url, "--vlm-model", "vlm",
            "--rewriter-base-url", rewriter_server.base_url, timeout=300,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        [sent] = vlm.chat_requests
    assert completed.stdout.strip().endswith("VLM: A careful answer.")
    assert sent.text == REWRITTEN
    assert len(sent.image_urls) == 1


# -- the LiteLLM proxy guardrail ----------------------------------------------------------


def test_the_litellm_guardrail_installs_from_its_wheel_without_torch(
    litellm_env: Environment,
) -> None:
    completed = litellm_env.python(
        """
        import importlib.util, json
        import litellm_vlmguard
        from litellm.integrations.custom_guardrail import CustomGuardrail
        print(json.dumps({
            "file": litellm_vlmguard.__file__,
            "guardrail": issubclass(litellm_vlmguard.VLMGuardGuardrail, CustomGuardrail),
            "torch": importlib.util.find_spec("torch") is not None,
            "openai": importlib.util.find_spec("openai") is not None,
        }))
        """
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(litellm_env.path)
    assert found["guardrail"] is True
    assert found["openai"] is True and found["torch"] is False
