"""``VLMGuardQueryTransform``: rewrite a multimodal query before the query engine sees it."""

from __future__ import annotations

from typing import Any

from llama_index.core.indices.query.query_transform.base import BaseQueryTransform
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import QueryBundle, QueryType

from vlmguard_plugins import Rewriter, RewriteRequest, RewriteResult, load_backend
from vlmguard_plugins.policy import validate_policy
from vlmguard_plugins.types import FailurePolicyName

from .events import dispatch_rewrite

PROMPT_KEY = "rewriter_prompt"
"""Name of the rewriter's system prompt in ``get_prompts()`` / ``update_prompts()``."""

IMAGES_METADATA_KEY = "images"
"""Key of extra images in the transform metadata (``TransformQueryEngine(transform_metadata)``)."""


class VLMGuardQueryTransform(BaseQueryTransform):
    """Rewrites a query's text, given its image, so the LLM answers safely and helpfully.

    The rewriter sees ``query_str`` with the bundle's ``image_path`` and any images
    listed under ``"images"`` in the transform metadata.  The returned bundle carries
    the rewritten ``query_str`` and the same ``image_path``.  By default the text
    used for retrieval stays the user's (``custom_embedding_strs`` keeps the original
    text), so retrieval stays on the user's topic while the LLM gets the rewritten
    query; set ``retrieve_with_original=False`` to retrieve with the rewritten text.

    Args:
        rewriter: the core :class:`~vlmguard_plugins.Rewriter`.
        retrieve_with_original: keep the original text for embedding-based retrieval.
        on_error: override the rewriter's failure policy for this transform.
        allow_local_files: read ``image_path`` and path images from disk (they are
            set by the application's code; turn off when they come from users).

    Example::

        transform = VLMGuardQueryTransform(rewriter)
        engine = TransformQueryEngine(index.as_query_engine(), query_transform=transform)
        engine.query(QueryBundle("How do I use this?", image_path="knife.jpg"))
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
    def from_backend(
        cls,
        name: str,
        *,
        rewriter_options: dict[str, Any] | None = None,
        retrieve_with_original: bool = True,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = True,
        **backend_options: Any,
    ) -> VLMGuardQueryTransform:
        """Build the backend (as for ``load_backend``), the rewriter and the transform.

        Example::

            VLMGuardQueryTransform.from_backend(
                "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
            )
        """
        rewriter = Rewriter(load_backend(name, **backend_options), **(rewriter_options or {}))
        return cls(
            rewriter,
            retrieve_with_original=retrieve_with_original,
            on_error=on_error,
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
        result = self.rewriter.rewrite(
            self._request(query_bundle, metadata), on_error=self.on_error
        )
        return self._bundle(query_bundle, result)

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
        request = self._request(bundle, metadata or {})
        result = await self.rewriter.arewrite(request, on_error=self.on_error)
        return self._bundle(bundle, result)

    def _request(self, bundle: QueryBundle, metadata: dict[str, Any]) -> RewriteRequest:
        images: list[Any] = [bundle.image_path] if bundle.image_path else []
        extra = metadata.get(IMAGES_METADATA_KEY)
        if isinstance(extra, (list, tuple)):
            images.extend(extra)
        elif extra is not None:
            images.append(extra)
        return RewriteRequest(
            text=bundle.query_str, images=images, allow_local_files=self.allow_local_files
        )

    def _bundle(self, bundle: QueryBundle, result: RewriteResult) -> QueryBundle:
        dispatch_rewrite(result)
        if self.retrieve_with_original:
            return QueryBundle(
                query_str=result.prompt,
                image_path=bundle.image_path,
                custom_embedding_strs=list(bundle.embedding_strs),
                embedding=bundle.embedding,
            )
        return QueryBundle(
            query_str=result.prompt,
            image_path=bundle.image_path,
            custom_embedding_strs=[result.prompt],
        )
