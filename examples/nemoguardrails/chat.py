"""Run the example rails against a served VLM: one guarded question with an image.

NeMo Guardrails calls the main model (``engine: openai``) on the OpenAI-compatible
server named by ``parameters.base_url`` in ``config.yml``; the vlmguard rail calls the
rewriter on the server named in ``custom_data.vlmguard``.  Start both (vLLM here)::

    vllm serve Qwen/Qwen2.5-VL-3B-Instruct --served-model-name vlmguard-r1 --port 8000 &
    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8001 &

    python examples/nemoguardrails/chat.py \\
        --image examples/assets/knife.png "What is the quickest way to use this on someone?"
    python examples/nemoguardrails/chat.py --config examples/nemoguardrails/config_colang2 \\
        --stream --image examples/assets/knife.png "How do I use this?"

The flags change the configuration as loaded, never the files: ``--vlm-base-url``
(``VLM_BASE_URL``) and ``--vlm-model`` (``VLM_MODEL``) the main model, and
``--rewriter-base-url`` (``VLMGUARD_BASE_URL``) and ``--rewriter-name``
(``VLMGUARD_MODEL``) the rewriter, and ``--vlm-api-key`` (``VLM_API_KEY``) sets the
VLM's key (otherwise NeMo reads ``OPENAI_API_KEY``; a local server takes any key).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import mimetypes
import os
from pathlib import Path
from typing import Any

# Importing the rail first lets NeMo find its flows from a source checkout as well.
import nemoguardrails_vlmguard  # noqa: F401
from nemoguardrails.rails import LLMRails, RailsConfig

HERE = Path(__file__).parent


def load_config(args: argparse.Namespace) -> RailsConfig:
    """The configuration folder, with the servers the flags name in place of its own."""
    config = RailsConfig.from_path(str(args.config))
    main_model = next(model for model in config.models if model.type == "main")
    if args.vlm_base_url:
        main_model.parameters = {**main_model.parameters, "base_url": args.vlm_base_url}
    if args.vlm_model:
        main_model.model = args.vlm_model
    if args.vlm_api_key:
        main_model.parameters = {**main_model.parameters, "api_key": args.vlm_api_key}
    rewriter = config.custom_data["vlmguard"]
    if args.rewriter_base_url:
        rewriter["base_url"] = args.rewriter_base_url
    if args.rewriter_name:
        rewriter["model"] = args.rewriter_name
    return config


def user_message(question: str, image: Path) -> dict[str, Any]:
    """The user's message in OpenAI's content-part format: the question and the image."""
    mime = mimetypes.guess_type(image.name)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode('ascii')}"
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": url}},
        ],
    }


async def stream_answer(rails: LLMRails, messages: list[dict[str, Any]]) -> str:
    """Print the main model's answer as NeMo streams it; return the whole answer."""
    pieces: list[str] = []
    async for chunk in rails.stream_async(messages=messages):
        text = chunk if isinstance(chunk, str) else str(chunk.get("text", ""))
        print("" if pieces else "VLM: ", text, sep="", end="", flush=True)
        pieces.append(text)
    print()
    return "".join(pieces)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; the servers' flags default to the environment, then config.yml."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--image", type=Path, required=True, help="a PNG or JPEG file")
    parser.add_argument("--config", type=Path, default=HERE / "config", help="a config folder")
    parser.add_argument("--vlm-base-url", default=env("VLM_BASE_URL"))
    parser.add_argument("--vlm-model", default=env("VLM_MODEL"))
    parser.add_argument("--vlm-api-key", default=env("VLM_API_KEY"))
    parser.add_argument("--rewriter-base-url", default=env("VLMGUARD_BASE_URL"))
    parser.add_argument("--rewriter-name", default=env("VLMGUARD_MODEL"))
    parser.add_argument("--stream", action="store_true", help="print the answer as it streams")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Ask the guarded VLM once; print and return its answer."""
    args = parse_args(argv)
    rails = LLMRails(load_config(args))
    messages = [user_message(args.question, args.image)]
    if args.stream:
        return asyncio.run(stream_answer(rails, messages))
    reply = rails.generate(messages=messages)
    answer = str(reply["content"]) if isinstance(reply, dict) else str(reply)
    print(f"VLM: {answer}")
    return answer


if __name__ == "__main__":
    main()
