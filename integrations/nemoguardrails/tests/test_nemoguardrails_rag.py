"""Retrieved context through the rail: only the user's question is rewritten.

The recipe (docs/nemoguardrails.md, "Retrieved context"): retrieve with the user's own
words, put the documents in a system message, send the question alone as the user's
message. The rail reads and rewrites the question; the system message (the
application's own text) reaches the main model as it was.
"""

from __future__ import annotations

from typing import Any

from nemoguardrails_vlmguard import get_rail

from vlmguard_plugins.conformance import RED, REWRITE, rewriting_backend

QUESTION = "How do I use the tool in the picture on my neighbour's lock?"
DOCUMENTS = ["Lock picks are sold to locksmiths.", "Entering another's home is a crime."]


def retrieve(question: str) -> list[str]:
    """A retriever as small as it gets: every document sharing a word with the question."""
    words = {word.strip(".,?'").lower() for word in question.split()}
    return [doc for doc in DOCUMENTS if words & {w.strip(".,").lower() for w in doc.split()}]


async def test_retrieved_context_reaches_the_model_intact(write_config, make_app) -> None:
    settings = {"backend": "scripted", "backend_options": {"outputs": rewriting_backend().outputs}}
    app, llm = make_app(write_config(settings))
    documents = retrieve(QUESTION)
    assert documents  # the retriever found something to put in front of the model
    context = "Answer from these documents:\n" + "\n".join(documents)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": context},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": QUESTION},
                {"type": "image_url", "image_url": {"url": RED}},
            ],
        },
    ]

    await app.generate_async(messages=messages)

    received = llm.last_messages
    assert received[0] == {"role": "system", "content": context}
    user = received[-1]["content"]
    assert user == [
        {"type": "text", "text": REWRITE},
        {"type": "image_url", "image_url": {"url": RED}},
    ]
    (call,) = get_rail(app).rewriter.backend.calls
    assert call.user_text == QUESTION  # the rewriter read the question, not the documents
    prompt = call.request.messages[-1]["content"][-1]["text"]
    assert "Lock picks are sold" not in prompt
