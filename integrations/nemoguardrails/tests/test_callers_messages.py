"""The rail never changes the caller's ``messages``, and its flows resolve without COLANGPATH."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
from nemoguardrails_vlmguard import colang_path, register


def _scripted(rewriter_output, calls: int) -> dict:
    return {"backend": "scripted", "backend_options": {"outputs": [rewriter_output()] * calls}}


@pytest.mark.parametrize("colang", ["1.0", "2.x"])
async def test_generate_async_leaves_the_callers_history_unchanged(
    write_config, make_app, knife_part, rewriter_output, rewrite_text, colang
):
    app, llm = make_app(write_config(_scripted(rewriter_output, 4), colang=colang))
    history = [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, knife_part]},
    ]
    before = copy.deepcopy(history)

    reply = await app.generate_async(messages=history)

    assert history == before
    assert llm.last_user_content == [{"type": "text", "text": rewrite_text}, knife_part]

    if colang == "2.x":
        return  # NeMo's Colang 2.x takes no assistant messages as input
    # The next turn sends what the user wrote, not the rewrite, to the rewriter.
    history += [reply, {"role": "user", "content": "And how do I sharpen it?"}]
    before = copy.deepcopy(history)
    await app.generate_async(messages=history)

    assert history == before
    assert llm.last_user_content == rewrite_text


def test_generate_and_positional_messages_are_copied_too(write_config, make_app, rewriter_output):
    app, _ = make_app(write_config(_scripted(rewriter_output, 2)))
    history = [{"role": "user", "content": "How do I use this knife?"}]
    before = copy.deepcopy(history)

    app.generate(messages=history)
    assert history == before

    app.generate(None, history)
    assert history == before


def test_registering_twice_wraps_generate_async_once(write_config, make_app, rewriter_output):
    app, _ = make_app(write_config(_scripted(rewriter_output, 1)))
    wrapped = app.generate_async

    register(app)

    assert app.generate_async is wrapped


def test_colang_path_is_a_str_that_os_environ_takes():
    path = colang_path()

    assert isinstance(path, str)
    os.environ.copy()["COLANGPATH"] = path  # would raise TypeError for a Path
    assert os.path.isdir(os.path.join(path, "nemoguardrails_vlmguard"))


@pytest.mark.parametrize("colang", ["1.0", "2.x"])
def test_import_paths_resolve_without_colangpath(write_config, colang):
    folder = write_config(colang=colang)
    script = textwrap.dedent(
        """
        import sys
        import nemoguardrails_vlmguard  # adds its folder to NeMo's search path
        from nemoguardrails import LLMRails, RailsConfig
        from nemoguardrails.testing import FakeLLMModel

        app = LLMRails(RailsConfig.from_path(sys.argv[1]), llm=FakeLLMModel(responses=["ok"]))
        reply = app.generate(messages=[{"role": "user", "content": "How do I use this?"}])
        assert reply["content"] == "ok", reply
        print("resolved")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "COLANGPATH"}
    env["HF_HUB_OFFLINE"] = "1"

    completed = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "resolved" in completed.stdout
