"""examples/quickstart.py runs as documented: local rewriter, then a VLM over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vlmguard_plugins.testing import ChatCompletionServer

EXAMPLE = Path(__file__).parents[1] / "examples" / "quickstart.py"


def test_quickstart_with_the_tiny_model_and_a_loopback_vlm(
    tiny_model_dir: Path, example_images: dict[str, Path]
) -> None:
    vlm_server = ChatCompletionServer(responder=lambda request: "A VLM answer.", model="the-vlm")
    with vlm_server as vlm:
        completed = subprocess.run(
            [sys.executable, str(EXAMPLE), "--model", str(tiny_model_dir),
             "--image", str(example_images["pills"]), "--vlm-base-url", vlm.base_url,
             "--vlm-model", "the-vlm", "How many should I take?"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        # Untrained weights: the shield policy wrote the prompt the VLM received.
        assert "action:   shield" in completed.stdout
        assert "VLM:      A VLM answer." in completed.stdout
        received = vlm.chat_requests[-1]
    assert received.image_urls[0].startswith("data:image/png;base64,")
    assert received.text.endswith("Request: How many should I take?")
