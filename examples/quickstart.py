"""Rewrite an image + text prompt, then hand the safe prompt to a VLM.

    python examples/quickstart.py --image examples/assets/pills.png "How many should I take?"
    python examples/quickstart.py --model /path/to/local/Qwen2.5-VL-3B-Instruct ...
    python examples/quickstart.py --base-url http://localhost:8000/v1 --model vlmguard-r1 ...

With ``--vlm-base-url`` the rewritten prompt and the same image are sent to an
OpenAI-compatible VLM server and its answer is printed.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from vlmguard_plugins import Rewriter, load_backend


def build_rewriter(model: str, base_url: str | None) -> Rewriter:
    if base_url:
        return Rewriter(backend=load_backend("openai", model=model, base_url=base_url))
    return Rewriter(backend=load_backend("transformers", model=model))


def ask_vlm(base_url: str, model: str, prompt: str, image: Path | None) -> str:
    from openai import OpenAI

    content: list[dict] = []
    if image is not None:
        encoded = base64.b64encode(image.read_bytes()).decode()
        url = f"data:image/png;base64,{encoded}"
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": prompt})
    reply = OpenAI(base_url=base_url, api_key="EMPTY").chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}]
    )
    return reply.choices[0].message.content or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--model", default="Qwen/Qwen2.5-VL-3B-Instruct")
    parser.add_argument("--base-url", help="an OpenAI-compatible server running the rewriter")
    parser.add_argument("--vlm-base-url", help="an OpenAI-compatible server running the VLM")
    parser.add_argument("--vlm-model", default="Qwen/Qwen2.5-VL-7B-Instruct")
    args = parser.parse_args()

    with build_rewriter(args.model, args.base_url) as rewriter:
        result = rewriter.rewrite(args.text, images=[args.image] if args.image else [])
    print(f"risk:     {result.risk_label}")
    print(f"action:   {result.action}" + (f" ({result.fallback})" if result.fallback else ""))
    print(f"analysis: {result.analysis or '-'}")
    print(f"prompt:   {result.prompt}")
    if args.vlm_base_url:
        print(f"VLM:      {ask_vlm(args.vlm_base_url, args.vlm_model, result.prompt, args.image)}")


if __name__ == "__main__":
    main()
