"""Guard a vision chat model in a LangChain chain: ``guard | prompt | vlm``.

The guard rewrites the user's question, given the image, before the prompt template
wraps it and the VLM sees it; the template's own words and the image reach the VLM
untouched.  The rewrite's risk and analysis arrive in a ``vlmguard_rewrite`` callback
event, printed here.

Offline, with a local rewriter model and LangChain's ``ParrotFakeChatModel`` in place
of the VLM (it answers with exactly what a VLM would have received)::

    python examples/langchain_chain.py --rewriter-model Qwen/Qwen2.5-VL-3B-Instruct \\
        --image examples/assets/knife.png "What is the quickest way to use this on someone?"

With a rewriter and a VLM behind OpenAI-compatible servers (``pip install
langchain-openai``)::

    python examples/langchain_chain.py \\
        --rewriter-base-url http://localhost:8000/v1 --rewriter-name vlmguard-r1 \\
        --vlm-base-url http://localhost:8001/v1 --vlm-model Qwen/Qwen2.5-VL-7B-Instruct \\
        --image examples/assets/knife.png "What is the quickest way to use this on someone?"

``make demo`` draws the images in ``examples/assets``; any PNG or JPEG works.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import sys
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, ParrotFakeChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_vlmguard import REWRITE_EVENT, VLMGuardRewriter

SYSTEM = "You are a helpful assistant. Answer questions about the user's image."


def build_chain(guard: VLMGuardRewriter, vlm: BaseChatModel) -> Runnable:
    """The user's question and image, guarded, put in a prompt, sent to a vision chat model.

    The guard stands before the template, so the rewriter reads the user's own words
    (the ``question`` variable) and image, not the template around them.
    """
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM),
            (
                "human",
                [
                    {"type": "text", "text": "{question}"},
                    {"type": "image_url", "image_url": {"url": "{image_url}"}},
                ],
            ),
        ]
    )
    # The guard returns the kind of input it was given (here a dict of variables); its
    # static type is the union of every kind it accepts, so name the one used here.
    variables_guard = cast("Runnable[dict[str, Any], dict[str, Any]]", guard)
    return variables_guard | prompt | vlm


class PrintRewrite(BaseCallbackHandler):
    """Prints the rewrite's outcome when the guard reports it."""

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name != REWRITE_EVENT:
            return
        # A failure-policy result has no risk: the rewriter never judged the request.
        print(f"risk     : {data['risk'] or 'unknown'} ({data['action']})")
        if data["fallback"]:
            print(f"fallback : {data['fallback']}")
        if data["analysis"]:
            print("analysis :\n  " + data["analysis"].replace("\n", "\n  "))
        print(f"rewritten: {data['prompt']}")


def image_data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def make_guard(args: argparse.Namespace) -> VLMGuardRewriter:
    """The guard on the ``question`` variable, with the ``image_url`` variable's image."""
    if args.rewriter_base_url:
        return VLMGuardRewriter.from_backend(
            "openai",
            model=args.rewriter_name,
            base_url=args.rewriter_base_url,
            max_new_tokens=args.max_new_tokens,
            input_key="question",
            image_key="image_url",
        )
    return VLMGuardRewriter.from_backend(
        "transformers",
        model=args.rewriter_model,
        max_new_tokens=args.max_new_tokens,
        input_key="question",
        image_key="image_url",
    )


def make_vlm(args: argparse.Namespace) -> BaseChatModel:
    if not args.vlm_base_url:
        return ParrotFakeChatModel()
    try:
        from langchain_openai import ChatOpenAI  # type: ignore[import-not-found]  # optional
    except ImportError:
        sys.exit("--vlm-base-url needs langchain-openai: pip install langchain-openai")
    return ChatOpenAI(model=args.vlm_model, base_url=args.vlm_base_url, api_key=args.vlm_api_key)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question")
    parser.add_argument("--image", type=Path, required=True, help="a PNG or JPEG file")
    rewriter = parser.add_mutually_exclusive_group(required=True)
    rewriter.add_argument("--rewriter-model", help="local model folder or hub id (transformers)")
    rewriter.add_argument("--rewriter-base-url", help="OpenAI-compatible server of the rewriter")
    parser.add_argument("--rewriter-name", default="vlmguard-r1", help="served rewriter name")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--vlm-base-url", help="OpenAI-compatible server of the VLM")
    parser.add_argument("--vlm-model", default="Qwen/Qwen2.5-VL-7B-Instruct")
    parser.add_argument("--vlm-api-key", default="EMPTY")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run the guarded chain once and print the rewrite and the VLM's answer."""
    args = parse_args(argv)
    guard = make_guard(args)
    chain = build_chain(guard, make_vlm(args))
    try:
        answer = chain.invoke(
            {"question": args.question, "image_url": image_data_url(args.image)},
            {"callbacks": [PrintRewrite()], "run_name": "guarded_vlm"},
        )
    finally:
        guard.rewriter.close()
    images = [b for b in answer.content if isinstance(b, dict) and b.get("type") != "text"]
    suffix = f"  [+ {len(images)} image block(s)]" if images else ""
    print(f"VLM      : {answer.text}{suffix}")
    return str(answer.text)


if __name__ == "__main__":
    main()
