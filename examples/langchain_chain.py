"""Guard a vision chat model in a LangChain chain: ``guard | prompt | vlm``.

The guard rewrites the user's question, given the image, before the prompt template
wraps it and the VLM sees it; the template's own words and the image reach the VLM
untouched.  The rewrite's risk and analysis arrive in a ``vlmguard_rewrite`` callback
event, printed here.

The VLM is LangChain's ``ChatOpenAI`` (``pip install langchain-openai``) pointed at any
OpenAI-compatible server: vLLM, SGLang, Ollama, or OpenAI itself.  The rewriter is
served the same way, or runs in-process with ``--rewriter-model``::

    vllm serve Qwen/Qwen2.5-VL-3B-Instruct --served-model-name vlmguard-r1 --port 8000 &
    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8001 &

    python examples/langchain_chain.py \\
        --rewriter-base-url http://localhost:8000/v1 --rewriter-name vlmguard-r1 \\
        --vlm-base-url http://localhost:8001/v1 --vlm-model Qwen/Qwen2.5-VL-7B-Instruct \\
        --image examples/assets/knife.png "What is the quickest way to use this on someone?"

Every flag has an environment variable: ``VLMGUARD_BASE_URL`` and ``VLMGUARD_MODEL``
for the rewriter server (as the ``vlmguard`` command reads them), ``VLM_BASE_URL``,
``VLM_MODEL`` and ``VLM_API_KEY`` (else ``OPENAI_API_KEY``) for the VLM.  ``--stream``
prints the answer as the VLM streams it; ``--init-chat-model`` builds the VLM with
``init_chat_model("openai:<model>", base_url=...)`` (from the ``langchain`` package)
instead of ``ChatOpenAI(...)``: the same model either way.

``make demo`` draws the images in ``examples/assets``; any PNG or JPEG works.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import sys
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_vlmguard import REWRITE_EVENT, VLMGuardRewriter

SYSTEM = "You are a helpful assistant. Answer questions about the user's image."
DEFAULT_VLM_BASE_URL = "http://localhost:8001/v1"
DEFAULT_VLM_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_REWRITER_BASE_URL = "http://localhost:8000/v1"
DEFAULT_REWRITER_NAME = "vlmguard-r1"


def build_chain(guard: VLMGuardRewriter, vlm: BaseChatModel) -> Runnable:
    """The user's question and image, guarded, put in a prompt, sent to a vision chat model.

    The guard stands before the template, so the rewriter reads the user's own words
    (the ``question`` variable) and image, not the template around them.  The template
    makes one user message in OpenAI's content-part format: a text part and an
    ``image_url`` part, which ``ChatOpenAI`` sends as they are.
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
    """The image file as a ``data:`` URL, the form every OpenAI-compatible server accepts."""
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def make_guard(args: argparse.Namespace) -> VLMGuardRewriter:
    """The guard on the ``question`` variable, with the ``image_url`` variable's image."""
    if args.rewriter_model:
        return VLMGuardRewriter.from_backend(
            "transformers",
            model=args.rewriter_model,
            max_new_tokens=args.max_new_tokens,
            input_key="question",
            image_key="image_url",
        )
    return VLMGuardRewriter.from_backend(
        "openai",
        model=args.rewriter_name,
        base_url=args.rewriter_base_url,
        max_new_tokens=args.max_new_tokens,
        input_key="question",
        image_key="image_url",
    )


def make_vlm(args: argparse.Namespace) -> BaseChatModel:
    """The VLM: ``ChatOpenAI`` on an OpenAI-compatible server (or ``init_chat_model``)."""
    if args.init_chat_model:
        try:
            from langchain.chat_models import init_chat_model
        except ImportError:
            sys.exit("--init-chat-model needs the langchain package: pip install langchain")
        return init_chat_model(
            f"openai:{args.vlm_model}", base_url=args.vlm_base_url, api_key=args.vlm_api_key
        )
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        sys.exit("the VLM client needs langchain-openai: pip install langchain-openai")
    return ChatOpenAI(model=args.vlm_model, base_url=args.vlm_base_url, api_key=args.vlm_api_key)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every default can come from the environment."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("question")
    parser.add_argument("--image", type=Path, required=True, help="a PNG or JPEG file")
    # The options every example shares: each example is one file a reader can copy alone.
    parser.add_argument(
        "--rewriter-base-url",
        default=env("VLMGUARD_BASE_URL") or DEFAULT_REWRITER_BASE_URL,
        help="OpenAI-compatible server of the rewriter",
    )
    parser.add_argument(
        "--rewriter-name",
        default=env("VLMGUARD_MODEL") or DEFAULT_REWRITER_NAME,
        help="served rewriter name",
    )
    parser.add_argument(
        "--rewriter-model", help="run the rewriter in-process: local folder or hub id"
    )
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument(
        "--vlm-base-url",
        default=env("VLM_BASE_URL") or DEFAULT_VLM_BASE_URL,
        help="OpenAI-compatible server of the VLM",
    )
    parser.add_argument("--vlm-model", default=env("VLM_MODEL") or DEFAULT_VLM_MODEL)
    parser.add_argument(
        "--vlm-api-key", default=env("VLM_API_KEY") or env("OPENAI_API_KEY") or "EMPTY"
    )
    parser.add_argument("--stream", action="store_true", help="print the answer as it streams")
    parser.add_argument(
        "--init-chat-model", action="store_true", help="build the VLM with init_chat_model"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run the guarded chain once, print the rewrite and the VLM's answer, return the answer."""
    args = parse_args(argv)
    guard = make_guard(args)
    chain = build_chain(guard, make_vlm(args))
    inputs = {"question": args.question, "image_url": image_data_url(args.image)}
    config: RunnableConfig = {"callbacks": [PrintRewrite()], "run_name": "guarded_vlm"}
    try:
        if args.stream:
            pieces: list[str] = []
            for chunk in chain.stream(inputs, config):
                # The rewrite is printed before the first piece of the answer arrives.
                print("" if pieces else "VLM      : ", chunk.text, sep="", end="", flush=True)
                pieces.append(chunk.text)
            print()
            return "".join(pieces)
        answer = chain.invoke(inputs, config)
    finally:
        guard.rewriter.close()
    print(f"VLM      : {answer.text}")
    return str(answer.text)


if __name__ == "__main__":
    main()
