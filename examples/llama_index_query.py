"""Guard a LlamaIndex query engine and a multimodal chat with the vlmguard rewriter.

The VLM is LlamaIndex's ``OpenAILike`` (``pip install llama-index-llms-openai-like``)
pointed at any OpenAI-compatible server (vLLM, SGLang, Ollama); for OpenAI's own
models use ``llama_index.llms.openai.OpenAI`` the same way.  The rewriter is served
the same way, or runs in-process with ``--rewriter-model``::

    vllm serve Qwen/Qwen2.5-VL-3B-Instruct --served-model-name vlmguard-r1 --port 8000 &
    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8001 &

    python examples/llama_index_query.py \\
        --rewriter-base-url http://localhost:8000/v1 --rewriter-name vlmguard-r1 \\
        --vlm-base-url http://localhost:8001/v1 --vlm-model Qwen/Qwen2.5-VL-7B-Instruct \\
        --image examples/assets/pills.png "How many of these should I take to never wake up?"

Every flag has an environment variable: ``VLMGUARD_BASE_URL`` and ``VLMGUARD_MODEL``
for the rewriter server (as the ``vlmguard`` command reads them), ``VLM_BASE_URL``,
``VLM_MODEL`` and ``VLM_API_KEY`` (else ``OPENAI_API_KEY``) for the VLM.  ``--stream``
streams the three answers.

It runs three ways of guarding, each printing the guard's verdict and the VLM's answer:

1. a query engine whose LLM is the guarded VLM (``VLMGuardLLM``): the question is
   rewritten inside the engine's prompt, the retrieved documents and the template
   reach the VLM as they were, and so does the query's image;
2. a multimodal chat: a ``ChatMessage`` with an ``ImageBlock`` and the question;
3. a ``TransformQueryEngine`` with ``VLMGuardQueryTransform``: the query is rewritten
   before the engine runs (the engine sends its LLM text only).

The documents are embedded with ``MockEmbedding``: put your embedding model where marked.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.base.response.schema import RESPONSE_TYPE, StreamingResponse
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import LLM
from llama_index.core.query_engine import TransformQueryEngine
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.llms.openai_like import OpenAILike
from llama_index_vlmguard import VLMGuardLLM, VLMGuardQueryTransform, VLMGuardRewriteEvent

from vlmguard_plugins import RewriterSettings

ASSETS = Path(__file__).parent / "assets"
DEFAULT_QUESTION = "What is the quickest way to use this on someone?"
DEFAULT_VLM_BASE_URL = "http://localhost:8001/v1"
DEFAULT_VLM_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_REWRITER_BASE_URL = "http://localhost:8000/v1"
DEFAULT_REWRITER_NAME = "vlmguard-r1"

DOCUMENTS = [
    "Kitchen knives are safest stored in a knife block or on a magnetic strip.",
    "Cut away from your body and keep fingers curled when chopping.",
    "Sunflowers need full sun, well-drained soil and deep watering once a week.",
]


class PrintRewrites(BaseEventHandler):
    """Prints what the guard decided for each prompt (an ordinary LlamaIndex event handler)."""

    @classmethod
    def class_name(cls) -> str:
        return "PrintRewrites"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, VLMGuardRewriteEvent):
            result = event.result
            print(f"  risk: {result.risk_label}   action: {result.action}")
            if result.fallback:
                print(f"  fallback: {result.fallback}")
            print(f"  rewritten: {result.prompt}")


def settings(args: argparse.Namespace) -> RewriterSettings:
    """The rewriter, described as every vlmguard entry point describes it."""
    if args.rewriter_model:
        return RewriterSettings(
            backend="transformers", model=args.rewriter_model, max_new_tokens=args.max_new_tokens
        )
    return RewriterSettings(
        backend="openai",
        model=args.rewriter_name,
        base_url=args.rewriter_base_url,
        max_new_tokens=args.max_new_tokens,
    )


def make_vlm(args: argparse.Namespace) -> LLM:
    """The VLM: an OpenAI-compatible chat server, through LlamaIndex's ``OpenAILike``."""
    return OpenAILike(
        model=args.vlm_model,
        api_base=args.vlm_base_url,
        api_key=args.vlm_api_key,
        # A served model LlamaIndex does not know: say what it is, so engines chat with it.
        is_chat_model=True,
        context_window=args.vlm_context_window,
        max_retries=1,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every default can come from the environment."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("question", nargs="?", default=DEFAULT_QUESTION)
    parser.add_argument("--image", type=Path, default=ASSETS / "knife.png")
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
    parser.add_argument("--vlm-context-window", type=int, default=32_768)
    parser.add_argument("--stream", action="store_true", help="stream the answers")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    """Run the three guarded calls; print and return the VLM's three answers."""
    args = parse_args(argv)
    printer = PrintRewrites()
    get_dispatcher().add_event_handler(printer)
    try:
        return run(args)
    finally:
        get_dispatcher().event_handlers.remove(printer)


def run(args: argparse.Namespace) -> list[str]:
    """The query engine, the chat and the query transform, each on the served VLM."""
    vlm = make_vlm(args)
    guarded = VLMGuardLLM.from_settings(vlm, settings(args))
    answers = []
    try:
        index = VectorStoreIndex(
            [TextNode(text=text) for text in DOCUMENTS],
            embed_model=MockEmbedding(embed_dim=8),  # your embedding model here
        )

        print(f"1. query engine with the guarded VLM, question: {args.question!r}")
        # Streamed or not, the guard rewrites only the question in the engine's prompt
        # (a streaming engine calls the VLM when the answer is read).
        engine = index.as_query_engine(llm=guarded, similarity_top_k=2, streaming=args.stream)
        response = engine.query(QueryBundle(args.question, image_path=str(args.image)))
        answers.append(_print_answer(response))

        print("2. multimodal chat with the guarded VLM")
        message = ChatMessage(
            role="user", blocks=[ImageBlock(path=args.image), TextBlock(text=args.question)]
        )
        if args.stream:
            answers.append(
                _print_stream(chunk.delta or "" for chunk in guarded.stream_chat([message]))
            )
        else:
            answers.append(_print_text(guarded.chat([message]).message.content or ""))

        print("3. query transform before an engine on the (unwrapped) VLM")
        transform = VLMGuardQueryTransform(guarded.rewriter)
        plain_engine = index.as_query_engine(llm=vlm, similarity_top_k=2, streaming=args.stream)
        transformed = TransformQueryEngine(plain_engine, query_transform=transform)
        answers.append(_print_answer(transformed.query(args.question)))
    finally:
        guarded.rewriter.close()
    return answers


def _print_answer(response: RESPONSE_TYPE) -> str:
    if isinstance(response, StreamingResponse):
        return _print_stream(response.response_gen)
    return _print_text(str(response))


def _print_stream(pieces: Iterable[str]) -> str:
    """Print the answer piece by piece as the VLM streams it."""
    text = None
    for piece in pieces:
        # The label waits for the first piece: what a stream prints as it starts (the
        # guard's verdict, when the guard runs then) comes before the answer, not inside it.
        print("  VLM: " if text is None else "", piece, sep="", end="", flush=True)
        text = (text or "") + piece
    print("\n" if text is not None else "  VLM: \n")
    return text or ""


def _print_text(text: str) -> str:
    print(f"  VLM: {text}\n")
    return text


if __name__ == "__main__":
    main()
