"""``VLMGuardQueryTransform``: rewrite a multimodal query before the query engine sees it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.indices.query.query_transform.base import BaseQueryTransform
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import QueryBundle, QueryType

from vlmguard_plugins import (
    Conversation,
    GuardedConversation,
    ImagePart,
    Rewriter,
    RewriterSettings,
    TextPart,
    Turn,
)
from vlmguard_plugins.conversation import Part
from vlmguard_plugins.policy import validate_policy
from vlmguard_plugins.types import FailurePolicyName

from .events import dispatch_rewrite
from .settings import build_rewriter_from_options, settings_from

PROMPT_KEY = "rewriter_prompt"
"""Name of the rewriter's system prompt in ``get_prompts()`` / ``update_prompts()``."""

IMAGES_METADATA_KEY = "images"
"""Key of extra images in the transform metadata (``TransformQueryEngine(transform_metadata)``)."""


class VLMGuardQueryTransform(BaseQueryTransform):
    """Rewrites a query's text, given its image, before a query engine answers it.

    The query becomes a one-message core conversation (the bundle's ``image_path`` and
    any images listed under ``"images"`` in the transform metadata, then
    ``query_str``) guarded by :meth:`vlmguard_plugins.Rewriter.aguard`.  The returned
    bundle carries the rewritten ``query_str`` and the same ``image_path``.  By default
    the text used for retrieval stays the user's (``custom_embedding_strs`` keeps the
    original text), so retrieval stays on the user's topic while the LLM gets the
    rewritten query; set ``retrieve_with_original=False`` to retrieve with the
    rewritten text.

    LlamaIndex's query engines use ``image_path`` for image retrieval only: their LLM
    receives the text, not the image.  For a VLM that must see the user's image, give
    the engine a :class:`~llama_index_vlmguard.VLMGuardLLM` instead of this transform:
    it rewrites the question inside the engine's prompt and sends the image with it.

    Args:
        rewriter: the core :class:`~vlmguard_plugins.Rewriter`.
        retrieve_with_original: keep the original text for embedding-based retrieval.
        on_error: override the rewriter's failure policy for this transform.
        allow_local_files: read ``image_path`` and path images from disk (they are
            set by the application's code; turn off when they come from users).

    Example::

        transform = VLMGuardQueryTransform(rewriter)
        engine = TransformQueryEngine(index.as_query_engine(), query_transform=transform)
        engine.query("How do I pick this lock?")
    """

    def __init__(
        self,
        rewriter: Rewriter,
        *,
        retrieve_with_original: bool = True,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = True,
    ) -> None:
        self.rewriter = rewriter
        self.retrieve_with_original = retrieve_with_original
        self.on_error: FailurePolicyName | None = validate_policy(on_error) if on_error else None
        self.allow_local_files = allow_local_files

    @classmethod
    def from_settings(
        cls,
        settings: RewriterSettings | Mapping[str, Any],
        *,
        retrieve_with_original: bool = True,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = True,
    ) -> VLMGuardQueryTransform:
        """A transform with the rewriter ``settings`` describe (a mapping is validated).

        Raises:
            ConfigurationError: an invalid or unknown setting, or an unknown backend.
        """
        return cls(
            settings_from(settings).build(),
            retrieve_with_original=retrieve_with_original,
            on_error=on_error,
            allow_local_files=allow_local_files,
        )

    @classmethod
    def from_backend(
        cls,
        backend: str,
        *,
        retrieve_with_original: bool = True,
        allow_local_files: bool = True,
        rewriter_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> VLMGuardQueryTransform:
        """A transform with a rewriter on ``backend``.

        An option named like a :class:`~vlmguard_plugins.RewriterSettings` field
        (``model``, ``base_url``, ``api_key``, ``on_error``, ``timeout_s``,
        ``cache_size``, ``max_images``, ``allow_remote_images``...) sets it; any other
        option goes to the backend (``load_backend``).  ``rewriter_options`` is the
        older spelling of the rewriter's settings (also taking ``image_limits`` and
        ``url_policy`` objects) and is deprecated.

        Example::

            VLMGuardQueryTransform.from_backend(
                "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
            )
        """
        return cls(
            build_rewriter_from_options(backend, options, rewriter_options),
            retrieve_with_original=retrieve_with_original,
            allow_local_files=allow_local_files,
        )

    # -- prompt mixin ---------------------------------------------------------------------

    def _get_prompts(self) -> PromptDictType:
        return {PROMPT_KEY: PromptTemplate(self.rewriter.system_prompt)}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if PROMPT_KEY in prompts:
            self.rewriter.system_prompt = prompts[PROMPT_KEY].get_template()

    # -- the transform --------------------------------------------------------------------

    def _run(self, query_bundle: QueryBundle, metadata: dict[str, Any]) -> QueryBundle:
        guarded = self.rewriter.guard(
            self._conversation(query_bundle, metadata),
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
        )
        return self._bundle(query_bundle, guarded)

    async def arun(
        self, query_bundle_or_str: QueryType, metadata: dict[str, Any] | None = None
    ) -> QueryBundle:
        """Asynchronous :meth:`run`, for code that calls the transform itself.

        (``TransformQueryEngine`` calls the synchronous ``run``, also from ``aquery``.)
        """
        bundle = (
            QueryBundle(query_str=query_bundle_or_str, custom_embedding_strs=[query_bundle_or_str])
            if isinstance(query_bundle_or_str, str)
            else query_bundle_or_str
        )
        guarded = await self.rewriter.aguard(
            self._conversation(bundle, metadata or {}),
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
        )
        return self._bundle(bundle, guarded)

    def _conversation(self, bundle: QueryBundle, metadata: dict[str, Any]) -> Conversation:
        """The query as the user's one message: its images, then its text."""
        # A string image is read as the core reads any: a URL as a URL, else a file path.
        images: list[Any] = [bundle.image_path] if bundle.image_path else []
        extra = metadata.get(IMAGES_METADATA_KEY)
        if isinstance(extra, (list, tuple)):
            images.extend(extra)
        elif extra is not None:
            images.append(extra)
        parts: list[Part] = [ImagePart(image) for image in images]
        parts.append(TextPart(bundle.query_str))
        return Conversation((Turn("user", tuple(parts), raw=bundle),))

    def _bundle(self, bundle: QueryBundle, guarded: GuardedConversation) -> QueryBundle:
        result = guarded.result
        assert result is not None  # the conversation always holds the user's message
        dispatch_rewrite(result)
        embedding_strs = (
            list(bundle.embedding_strs) if self.retrieve_with_original else [result.prompt]
        )
        return QueryBundle(
            query_str=result.prompt,
            image_path=bundle.image_path,
            custom_embedding_strs=embedding_strs,
            embedding=bundle.embedding if self.retrieve_with_original else None,
        )


__all__ = ["IMAGES_METADATA_KEY", "PROMPT_KEY", "VLMGuardQueryTransform"]
