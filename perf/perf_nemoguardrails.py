"""NeMo Guardrails rail benchmark: the rail's overhead in ``LLMRails.generate_async``.

Compares the same Colang 1.0 configuration (passthrough, a main LLM that answers at
once) without input rails, with a no-op input rail (what NeMo's input-rail machinery
costs by itself) and with the ``vlmguard rewrite input`` rail.  The rewriter runs on a
zero-latency ``ScriptedBackend``, so the figures are what the rail itself costs.  The
core calls are timed alongside for reference: ``Rewriter.arewrite`` (the rewrite alone)
and ``Rewriter.aguard`` (what the rail calls: coverage, the rewrite and write-back for
the same conversation); the rail's own share is what is left.

Run: .venv/bin/python perf/perf_nemoguardrails.py
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.testing import FakeLLMModel

# Importing the package lets NeMo resolve `import_paths: [nemoguardrails_vlmguard]` from
# an editable install too (it adds the module's folder to NeMo's Colang path).
from nemoguardrails_vlmguard import get_rail

from vlmguard_plugins import RewriteRequest, Risk
from vlmguard_plugins.conversation import from_openai
from vlmguard_plugins.examples_assets import draw_example_images
from vlmguard_plugins.parsing import format_output

N_CALLS = 150
WARM_UP = 20

# The shipped example, measured as users copy it: only the main model (the fake one
# below) and the rewriter's settings (a zero-latency scripted backend) change.
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nemoguardrails" / "config"

BASE_CONFIG = """\
passthrough: true
"""


def rail_config() -> str:
    """The example's ``config.yml`` with a scripted rewriter and no main model of its own."""
    config = yaml.safe_load((EXAMPLE / "config.yml").read_text(encoding="utf-8"))
    config.pop("models", None)
    output = format_output("textual: x", Risk.MEDIUM, "Describe safe handling of this.")
    config["custom_data"] = {
        "vlmguard": {"backend": "scripted", "backend_options": {"outputs": [output]}}
    }
    return yaml.safe_dump(config, sort_keys=False)


NOOP_RAIL_CONFIG = """\
passthrough: true
rails:
  input:
    flows:
      - noop input rail
"""

NOOP_RAIL_FLOW = """\
define subflow noop input rail
  $checked = execute noop_check(user_message=$user_message)
  $user_message = $checked
"""

NOOP_ACTIONS_PY = """\
from nemoguardrails.actions import action


@action(name="noop_check", is_system_action=True)
async def noop_check(user_message=None):
    return user_message
"""


def build(folder: Path, config_yml: str, files: dict[str, str] | None = None) -> LLMRails:
    folder.mkdir()
    (folder / "config.yml").write_text(config_yml)
    for name, content in (files or {}).items():
        (folder / name).write_text(content)
    llm = FakeLLMModel(responses=["Here is a careful answer."] * 10_000)
    return LLMRails(RailsConfig.from_path(str(folder)), llm=llm)


async def time_generate(apps: dict[str, LLMRails], content: object) -> dict[str, float]:
    """Median milliseconds of one ``generate_async`` call per app, calls interleaved.

    Interleaving spreads any noise from other work on the machine over every app alike.
    """
    messages = [{"role": "user", "content": content}]
    for app in apps.values():
        for _ in range(WARM_UP):
            await app.generate_async(messages=messages)
    timings: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(N_CALLS):
        for name, app in apps.items():
            started = time.perf_counter()
            await app.generate_async(messages=messages)
            timings[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


@dataclass(frozen=True)
class Timings:
    """Medians in milliseconds: ``Rewriter.arewrite``, ``Rewriter.aguard``, the rail's action."""

    rewrite: float
    guard: float
    action: float


async def time_calls(app: LLMRails, text: str, images: list[str], content: object) -> Timings:
    """Median milliseconds of the core calls and of the rail's action, interleaved.

    The action is given the events NeMo gives it for a one-message conversation, so
    ``rail action - Rewriter.aguard`` is the adapter's own work, measured directly
    rather than as the difference of two noisy ``generate_async`` medians.
    """
    rail = get_rail(app)
    request = RewriteRequest(text=text, images=images, allow_local_files=False)
    messages = [{"role": "user", "content": content}]
    events = [{"type": "UtteranceUserActionFinished", "final_transcript": content}]
    timings: dict[str, list[float]] = {"rewrite": [], "guard": [], "action": []}
    for _ in range(N_CALLS):
        started = time.perf_counter()
        await rail.rewriter.arewrite(request)
        timings["rewrite"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        # Converting the messages is part of the core path the rail takes, so it is timed.
        await rail.rewriter.aguard(from_openai(messages))
        timings["guard"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await rail.rewrite(content, events)
        timings["action"].append((time.perf_counter() - started) * 1000)
    return Timings(**{name: statistics.median(values) for name, values in timings.items()})


async def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        knife = draw_example_images(root / "assets")["knife"]
        data_url = "data:image/png;base64," + base64.b64encode(knife.read_bytes()).decode()
        text = "How do I use this?"
        inputs = {
            "text only": (text, []),
            "text + 1 image (PNG data URL)": (
                [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
                [data_url],
            ),
        }
        apps = {
            "no input rail": build(root / "without", BASE_CONFIG),
            "a no-op input rail": build(
                root / "noop",
                NOOP_RAIL_CONFIG,
                {"rails.co": NOOP_RAIL_FLOW, "actions.py": NOOP_ACTIONS_PY},
            ),
            "the vlmguard rail": build(
                root / "with",
                rail_config(),
                {"config.py": (EXAMPLE / "config.py").read_text(encoding="utf-8")},
            ),
        }
        print(
            "LLMRails.generate_async, Colang 1.0, passthrough, zero-latency main LLM and "
            f"rewriter backend (median of {N_CALLS} calls each, interleaved)"
        )
        for label, (content, images) in inputs.items():
            medians = await time_generate(apps, content)
            base = medians["no input rail"]
            core = await time_calls(apps["the vlmguard rail"], text, images, content)
            print(f"  {label}:")
            for name, median in medians.items():
                print(f"    with {name:18s}: {median:6.2f} ms/call ({median / base:4.2f}x)")
            rail, noop = medians["the vlmguard rail"], medians["a no-op input rail"]
            print(f"    rail overhead          : {rail - base:6.2f} ms/call")
            print(f"      NeMo input-rail run  : {noop - base:6.2f} ms/call (the no-op rail)")
            print(f"      rail action          : {core.action:6.2f} ms/call (VLMGuardRail.rewrite)")
            print(
                f"        Rewriter.aguard    : {core.guard:6.2f} ms/call (the core call it makes)"
            )
            print(f"          Rewriter.arewrite: {core.rewrite:6.2f} ms/call (the rewrite alone)")
            print(f"        adapter alone      : {core.action - core.guard:6.3f} ms/call")
            print(f"      flow + rest          : {rail - noop - core.action:6.2f} ms/call")


if __name__ == "__main__":
    asyncio.run(main())
