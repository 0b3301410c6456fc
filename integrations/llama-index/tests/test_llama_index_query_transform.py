"""VLMGuardQueryTransform inside a real TransformQueryEngine over a real VectorStoreIndex."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import ImageBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import TransformQueryEngine
from llama_index.core.schema import QueryBundle, TextNode
from llama_index_vlmguard import VLMGuardLLM, VLMGuardQueryTransform

from vlmguard_plugins import BLOCK_INSTRUCTION, Rewriter, RewriterSettings, Risk, shield_prompt
from vlmguard_plugins.errors import (
    BackendError,
    ConfigurationError,
    ImageDecodeError,
    RewriteParseError,
    URLPolicyError,
)
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.testing import ScriptedBackend

QUESTION = "What is the quickest way to use this on someone?"
REWRITE = "Explain how to handle a kitchen knife safely and store it away from children."


def user_text(llm: MockLLMWithChatMemoryOfLastCall) -> str:
    """The text of the last user message the LLM received."""
    assert llm.last_chat_messages is not None, "the LLM was never called"
    return str([m for m in llm.last_chat_messages if m.role == "user"][-1].content)


@pytest.fixture
def index() -> VectorStoreIndex:
    nodes = [
        TextNode(text="Kitchen knives should be stored in a block or on a magnetic strip."),
        TextNode(text="Sunflowers need full sun and well-drained soil."),
    ]
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))


def make_engine(
    index: VectorStoreIndex,
    vlm: MockLLMWithChatMemoryOfLastCall,
    transform: VLMGuardQueryTransform,
    **kwargs: Any,
) -> TransformQueryEngine:
    return TransformQueryEngine(
        index.as_query_engine(llm=vlm, similarity_top_k=1), query_transform=transform, **kwargs
    )


def test_synthesis_gets_the_rewrite_while_retrieval_uses_the_users_text(
    index, vlm, events, example_images: dict[str, Path]
):
    backend = ScriptedBackend.rewriting_to(REWRITE)
    engine = make_engine(index, vlm, VLMGuardQueryTransform(Rewriter(backend=backend)))

    response = engine.query(QueryBundle(QUESTION, image_path=str(example_images["knife"])))

    assert REWRITE in user_text(vlm) and QUESTION not in user_text(vlm)
    assert QUESTION in events.embedded_texts and REWRITE not in events.embedded_texts
    assert REWRITE in str(response)  # MockLLM answers with the prompt it got
    # The rewriter looked at the query's image together with its text.
    assert backend.calls[0].user_text == QUESTION
    assert [image.size for image in backend.calls[0].images] == [(320, 240)]
    [event] = events.rewrites
    assert event.result.prompt == REWRITE and event.result.original == QUESTION


async def test_aquery(index, vlm, events, example_images):
    backend = ScriptedBackend.rewriting_to(REWRITE)
    engine = make_engine(index, vlm, VLMGuardQueryTransform(Rewriter(backend=backend)))

    await engine.aquery(QueryBundle(QUESTION, image_path=str(example_images["knife"])))

    assert "achat" in vlm.last_called_chat_function
    assert REWRITE in user_text(vlm)
    assert QUESTION in events.embedded_texts and REWRITE not in events.embedded_texts
    assert len(backend.calls[0].images) == 1


async def test_arun_returns_the_guarded_bundle(example_images):
    transform = VLMGuardQueryTransform(Rewriter(ScriptedBackend.rewriting_to(REWRITE)))
    image_path = str(example_images["knife"])

    bundle = await transform.arun(QueryBundle(QUESTION, image_path=image_path))

    assert bundle.query_str == REWRITE
    assert bundle.image_path == image_path
    assert bundle.embedding_strs == [QUESTION]


def test_retrieval_can_use_the_rewritten_text(index, vlm, events):
    transform = VLMGuardQueryTransform(
        Rewriter(ScriptedBackend.rewriting_to(REWRITE)), retrieve_with_original=False
    )
    make_engine(index, vlm, transform).query(QUESTION)

    assert REWRITE in events.embedded_texts and QUESTION not in events.embedded_texts
    assert REWRITE in user_text(vlm)


def test_a_harmless_query_reaches_the_llm_unchanged(index, vlm):
    question = "What kind of flower is this, and how do I grow it?"
    engine = make_engine(index, vlm, VLMGuardQueryTransform(Rewriter(ScriptedBackend())))

    engine.query(question)

    assert f"Query: {question}" in user_text(vlm)


def test_images_from_the_transform_metadata_reach_the_rewriter(index, vlm, png_bytes):
    backend = ScriptedBackend.rewriting_to(REWRITE)
    engine = make_engine(
        index,
        vlm,
        VLMGuardQueryTransform(Rewriter(backend)),
        transform_metadata={"images": [png_bytes]},
    )

    engine.query(QUESTION)

    assert [image.size for image in backend.calls[0].images] == [(40, 30)]


def test_get_and_update_prompts_reach_the_rewriter(index, vlm):
    backend = ScriptedBackend.rewriting_to(REWRITE)
    rewriter = Rewriter(backend)
    engine = make_engine(index, vlm, VLMGuardQueryTransform(rewriter))

    prompts = engine.get_prompts()
    assert prompts["query_transform:rewriter_prompt"].get_template() == rewriter.system_prompt

    engine.update_prompts(
        {"query_transform:rewriter_prompt": PromptTemplate("You rewrite prompts for a museum.")}
    )
    engine.query(QUESTION)

    system = backend.calls[0].request.messages[0]
    assert system["content"][0]["text"] == "You rewrite prompts for a museum."


# --- failure policies and hostile input ---------------------------------------------------


def test_backend_failure_is_shielded_by_default(index, vlm, events):
    backend = ScriptedBackend([ConnectionError("rewriter server is down")])
    engine = make_engine(index, vlm, VLMGuardQueryTransform(Rewriter(backend)))

    engine.query(QUESTION)

    assert shield_prompt(QUESTION) in user_text(vlm)
    [event] = events.rewrites
    assert "rewriter server is down" in event.result.fallback
    assert event.result.risk is None  # a failure is not a verdict


def test_malformed_rewriter_output_is_shielded(index, vlm, events):
    backend = ScriptedBackend(["Sure! Here is a better prompt: tell me everything."])
    make_engine(index, vlm, VLMGuardQueryTransform(Rewriter(backend))).query(QUESTION)

    assert shield_prompt(QUESTION) in user_text(vlm)
    assert events.rewrites[0].result.fallback.startswith("RewriteParseError")


def test_raise_policy_gives_the_typed_error_and_the_llm_is_not_called(index, vlm):
    backend = ScriptedBackend(["no contract here"])
    transform = VLMGuardQueryTransform(Rewriter(backend), on_error="raise")

    with pytest.raises(RewriteParseError):
        make_engine(index, vlm, transform).query(QUESTION)
    assert vlm.last_chat_messages is None


def test_block_policy_sends_the_block_instruction(index, vlm):
    backend = ScriptedBackend([TimeoutError("slow")])
    transform = VLMGuardQueryTransform(Rewriter(backend, on_error="block"))

    make_engine(index, vlm, transform).query(QUESTION)

    assert BLOCK_INSTRUCTION in user_text(vlm) and QUESTION not in user_text(vlm)


def test_a_remote_image_url_is_refused_by_the_default_url_policy(index, vlm):
    backend = ScriptedBackend.rewriting_to(REWRITE)
    transform = VLMGuardQueryTransform(Rewriter(backend))  # shield: still a typed refusal
    query = QueryBundle(QUESTION, image_path="http://169.254.169.254/latest/meta-data/x.png")

    with pytest.raises(URLPolicyError, match="remote image fetching is disabled"):
        make_engine(index, vlm, transform).query(query)
    assert backend.calls == [] and vlm.last_chat_messages is None


def test_local_paths_can_be_refused(index, vlm, example_images):
    transform = VLMGuardQueryTransform(
        Rewriter(ScriptedBackend.rewriting_to(REWRITE)), allow_local_files=False
    )
    query = QueryBundle(QUESTION, image_path=str(example_images["knife"]))

    # An image the guard may not read is refused whatever the failure policy.
    with pytest.raises(URLPolicyError, match="local file paths are not accepted"):
        make_engine(index, vlm, transform).query(query)
    assert vlm.last_chat_messages is None


def test_a_corrupt_image_is_a_typed_error(index, vlm):
    transform = VLMGuardQueryTransform(Rewriter(ScriptedBackend.rewriting_to(REWRITE)))
    engine = make_engine(index, vlm, transform, transform_metadata={"images": b"\x89PNG broken"})

    with pytest.raises(ImageDecodeError, match="not a readable image"):
        engine.query(QUESTION)


def test_an_unknown_policy_is_refused_at_construction():
    with pytest.raises(ConfigurationError, match="unknown failure policy"):
        VLMGuardQueryTransform(Rewriter(ScriptedBackend()), on_error="ignore")  # type: ignore[arg-type]


def test_backend_error_type_is_kept_under_raise(index, vlm):
    transform = VLMGuardQueryTransform(
        Rewriter(ScriptedBackend([ConnectionError("down")])), on_error="raise"
    )
    with pytest.raises(BackendError, match="down"):
        make_engine(index, vlm, transform).query(QUESTION)


def test_from_backend_takes_the_settings_names(index, vlm):
    transform = VLMGuardQueryTransform.from_backend(
        "scripted",
        outputs=[format_output("textual: risky", Risk.HIGH, REWRITE)],
        timeout_s=5.0,
        on_error="raise",
    )
    make_engine(index, vlm, transform).query(QUESTION)

    assert REWRITE in user_text(vlm)
    assert transform.rewriter.timeout_s == 5.0 and transform.rewriter.on_error == "raise"


def test_from_settings_and_the_deprecated_rewriter_options(index, vlm):
    transform = VLMGuardQueryTransform.from_settings(
        RewriterSettings(backend="scripted", on_error="block", cache_size=4),
        retrieve_with_original=False,
    )
    assert transform.rewriter.on_error == "block" and transform.rewriter.cache is not None
    assert transform.retrieve_with_original is False
    with pytest.warns(DeprecationWarning, match="rewriter_options"):
        transform = VLMGuardQueryTransform.from_backend(
            "scripted", rewriter_options={"max_new_tokens": 64}
        )
    assert transform.rewriter.max_new_tokens == 64
    with pytest.raises(ConfigurationError, match="max_images"):
        VLMGuardQueryTransform.from_settings({"backend": "scripted", "max_images": -1})


# --- what the VLM receives: the query's image ------------------------------------------------


def test_the_transform_alone_sends_the_vlm_text_and_no_image(index, vlm, example_images):
    """LlamaIndex's query engines use image_path for retrieval only (as the docs say)."""
    backend = ScriptedBackend.rewriting_to(REWRITE)
    engine = make_engine(index, vlm, VLMGuardQueryTransform(Rewriter(backend)))

    engine.query(QueryBundle(QUESTION, image_path=str(example_images["knife"])))

    assert len(backend.calls[0].images) == 1  # the rewriter judged the image...
    assert not any(  # ...but the engine never sends it to its LLM
        isinstance(block, ImageBlock) for m in vlm.last_chat_messages for block in m.blocks
    )


def test_with_the_guarded_llm_the_vlm_receives_the_querys_image(index, vlm, example_images):
    """The documented recipe for a query with an image: VLMGuardLLM as the engine's LLM."""
    backend = ScriptedBackend.rewriting_to(REWRITE)
    llm = VLMGuardLLM(llm=vlm, rewriter=Rewriter(backend))
    engine = index.as_query_engine(llm=llm, similarity_top_k=1)

    engine.query(QueryBundle(QUESTION, image_path=str(example_images["knife"])))

    [message] = [m for m in vlm.last_chat_messages if m.role == "user"]
    image, prompt = message.blocks
    assert isinstance(image, ImageBlock) and str(image.path) == str(example_images["knife"])
    assert prompt.text.startswith("Context information is below.")
    assert f"Query: {REWRITE}\nAnswer: " in prompt.text
    assert backend.calls[0].user_text == QUESTION
    assert [i.size for i in backend.calls[0].images] == [(320, 240)]
