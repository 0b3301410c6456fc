"""Retrieval-augmented chains: only the user's own words are rewritten; context survives.

The recipe: put the guard on the user's question *before* the prompt template, so
the template's words and the retrieved documents reach the VLM intact and the
rewriter never reads them.  A retriever from langchain_core (``InMemoryVectorStore``
with ``DeterministicFakeEmbedding``) stands in for a real one.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import ParrotFakeChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_vlmguard import VLMGuardRewriter

from vlmguard_plugins import Rewriter
from vlmguard_plugins.testing import ScriptedBackend

QUESTION = "How do I get past the lock on my neighbour's shed?"
DOCUMENTS = [
    "Shed locks: most garden sheds use a simple padlock and hasp.",
    "Locksmiths: a licensed locksmith can open a lock with the owner's consent.",
]
SYSTEM = "Answer from the context only."
TEMPLATE = "Context:\n{context}\n\nQuestion: {question}"


def format_docs(documents: list[Document]) -> str:
    return "\n".join(sorted(document.page_content for document in documents))


@pytest.fixture
def retriever() -> Any:
    store = InMemoryVectorStore(embedding=DeterministicFakeEmbedding(size=32))
    store.add_texts(DOCUMENTS)
    return store.as_retriever(search_kwargs={"k": len(DOCUMENTS)})


@pytest.fixture
def prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", TEMPLATE)])


def rewriter_prompt(backend: ScriptedBackend) -> str:
    """Everything the rewriter model read."""
    (call,) = backend.calls
    return "\n".join(
        part["text"]
        for message in call.request.messages
        for part in message["content"]
        if part.get("type") == "text"
    )


def assert_only_the_question_was_rewritten(
    backend: ScriptedBackend, received: list[Any], rewritten: str
) -> None:
    system, human = received
    assert system.content == SYSTEM
    # The template and every retrieved document reach the VLM intact...
    assert human.content == TEMPLATE.format(
        context="\n".join(sorted(DOCUMENTS)), question=rewritten
    )
    # ...and the rewriter read the user's question alone.
    assert backend.calls[0].user_text == QUESTION
    seen = rewriter_prompt(backend)
    assert "Context:" not in seen and SYSTEM not in seen
    assert all(document not in seen for document in DOCUMENTS)


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_guard_on_the_question_then_retrieve_with_passthrough_assign(
    backend, retriever, prompt, recorder, rewritten, use_async
):
    guard = VLMGuardRewriter(rewriter=Rewriter(backend), input_key="question")
    chain = (
        # Retrieve with the user's own words, then rewrite them; the context is another
        # variable, which the guard passes on unread.
        RunnablePassthrough.assign(context=itemgetter("question") | retriever | format_docs)
        | guard
        | prompt
        | ParrotFakeChatModel()
    )
    config = {"callbacks": [recorder]}
    inputs = {"question": QUESTION}

    await chain.ainvoke(inputs, config) if use_async else chain.invoke(inputs, config)

    assert_only_the_question_was_rewritten(backend, recorder.received[0], rewritten)


def test_guard_on_a_string_before_a_retrieval_map(backend, retriever, prompt, recorder, rewritten):
    guard = VLMGuardRewriter(rewriter=Rewriter(backend))
    chain = (
        guard
        | {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | ParrotFakeChatModel()
    )

    chain.invoke(QUESTION, {"callbacks": [recorder]})

    assert_only_the_question_was_rewritten(backend, recorder.received[0], rewritten)


def test_the_users_image_travels_with_the_question(
    backend, retriever, recorder, rewritten, image_b64
):
    guard = VLMGuardRewriter(rewriter=Rewriter(backend), input_key="question", image_key="image")
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM),
            (
                "human",
                [
                    {"type": "text", "text": TEMPLATE},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,{image}"}},
                ],
            ),
        ]
    )
    chain = (
        RunnablePassthrough.assign(context=itemgetter("question") | retriever | format_docs)
        | guard
        | prompt
        | ParrotFakeChatModel()
    )

    chain.invoke({"question": QUESTION, "image": image_b64}, {"callbacks": [recorder]})

    _, human = recorder.received[0]
    context = "\n".join(sorted(DOCUMENTS))
    assert human.content[0]["text"] == TEMPLATE.format(context=context, question=rewritten)
    assert human.content[1]["image_url"]["url"].endswith(image_b64)
    assert [image.size for image in backend.calls[0].images] == [(40, 30)]
    assert all(document not in rewriter_prompt(backend) for document in DOCUMENTS)


def test_after_the_template_the_whole_human_message_is_the_users(
    backend, retriever, prompt, rewritten
):
    # The documented limit: after a template, the guard cannot tell the user's words
    # from the template's and the context, so it reads and rewrites the whole message.
    guard = VLMGuardRewriter(rewriter=Rewriter(backend))
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | guard

    system, human = chain.invoke(QUESTION).to_messages()

    assert system.content == SYSTEM
    assert human.content == rewritten
    assert backend.calls[0].user_text.startswith("Context:")
    assert all(document in backend.calls[0].user_text for document in DOCUMENTS)
