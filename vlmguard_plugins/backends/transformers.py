"""Run the rewriter model locally through Hugging Face ``transformers``.

Any ``AutoModelForImageTextToText`` + ``AutoProcessor`` model (Qwen2.5-VL,
Qwen2-VL, ...) by hub id or local folder.  Concurrent calls are gathered into
left-padded batches (see :class:`~vlmguard_plugins.backends._batching.MicroBatcher`: a
lone request starts at once, requests that arrive while a batch runs form the next
one); generation stops after ``</rewrite>`` or the ``<unchanged/>`` marker.

Why not transformers' own continuous batching (``model.generate_batch``,
``ContinuousBatchingManager``, as installed with transformers 5.x): it takes prompts as
token ids only, so there is no way to pass ``pixel_values`` / ``image_grid_thw``, and
it lays positions out in one dimension where Qwen2.5-VL needs its 3-D multimodal
rotary positions for image tokens; it has no stop strings either, so it could not end
an answer at ``</rewrite>``. It does not serve Qwen2.5-VL with images, and the
rewriter's requests (images, stop strings) never fit it, so it is not used here.

Sampling follows the request: ``temperature`` above 0 samples (with ``top_p`` when
set); a request with a ``seed`` is generated alone, right after ``torch.manual_seed``,
so the same seed gives the same answer whatever else is running.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigurationError, ModelNotFoundError
from ..parsing import UNCHANGED_MARKER
from ._batching import MicroBatcher
from .base import STOP_SEQUENCE, Generation, GenerationRequest, truncate_after_stop

__all__ = [
    "DEFAULT_MODEL",
    "TransformersBackend",
]

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


def _pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _pick_dtype(dtype: str | Any | None, device: str) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        try:
            return getattr(torch, dtype)
        except AttributeError as exc:
            raise ConfigurationError(f"unknown torch dtype {dtype!r}") from exc
    return dtype


def _content_for_template(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"type": "image"} if part.get("type") == "image" else {"type": "text", "text": part["text"]}
        for part in content
    ]


def _contract_stops(stop: Sequence[str]) -> list[str]:
    """The stop strings, with the marker added where the request stops at the contract's end.

    An answer of the output contract ends with ``</rewrite>`` or with the
    ``<unchanged/>`` marker, and nothing after either is read.
    """
    stops = list(stop)
    if STOP_SEQUENCE in stops and UNCHANGED_MARKER not in stops:
        stops.append(UNCHANGED_MARKER)
    return stops


class TransformersBackend:
    """A local model served in-process.

    Args:
        model: hub id or local folder (default ``Qwen/Qwen2.5-VL-3B-Instruct``).
        device: ``cuda``, ``cuda:1``, ``mps`` or ``cpu``; chosen automatically when None.
        dtype: torch dtype or its name; bf16/fp16 on GPU and fp32 on CPU when None.
        max_batch_size: most requests generated together.
        max_wait_ms: accepted so existing configurations still load, and ignored: a
            request never waits for companions (those that arrive while a batch
            runs form the next batch).
        local_files_only: never try the hub (defaults to ``HF_HUB_OFFLINE``).
        model_kwargs / processor_kwargs: passed to ``from_pretrained``.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str | Any | None = None,
        max_batch_size: int = 8,
        max_wait_ms: float = 0.0,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = str(model)
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self._generate_lock = threading.Lock()
        self._seeded = itertools.count()
        self.processor, self.model = self._load(
            local_files_only, trust_remote_code, model_kwargs or {}, processor_kwargs or {}
        )
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batcher: MicroBatcher[GenerationRequest, Generation] = MicroBatcher(
            self.generate_batch,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            group_key=self._group_key,
        )

    def _group_key(self, request: GenerationRequest) -> Hashable:
        """Requests that may share a batch: the same generation settings, and no seed.

        A seeded answer must not depend on its batch mates (padding changes the
        logits), so each seeded request gets a key of its own.
        """
        alone = None if request.seed is None else next(self._seeded)
        return (
            request.max_new_tokens,
            request.temperature,
            request.top_p,
            tuple(request.stop),
            alone,
        )

    def _load(
        self,
        local_files_only: bool | None,
        trust_remote_code: bool,
        model_kwargs: dict[str, Any],
        processor_kwargs: dict[str, Any],
    ) -> tuple[Any, Any]:
        import os

        from transformers import AutoModelForImageTextToText, AutoProcessor

        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false")
        common = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
        try:
            processor = AutoProcessor.from_pretrained(self.model_name, **common, **processor_kwargs)
            model: Any = AutoModelForImageTextToText.from_pretrained(
                self.model_name, dtype=self.dtype, **common, **model_kwargs
            )
        except (OSError, ValueError) as exc:
            if Path(self.model_name).exists():
                raise ModelNotFoundError(
                    f"could not load model from folder {self.model_name!r}: {exc}"
                ) from exc
            raise ModelNotFoundError(
                f"the weights of {self.model_name!r} cannot be found"
                f"{' offline' if local_files_only else ''}. Download them on a connected "
                f"machine (`hf download {self.model_name}`) into the Hugging Face cache, or "
                "set the rewriter's model to a local folder (model='/path/to/model'; "
                "--model for vlmguard rewrite, --rewriter-model for vlmguard serve and vlmguard "
                "bench run, model: under NeMo's custom_data: vlmguard:)"
                f" (cause: {type(exc).__name__})"
            ) from exc
        model.to(self.device)
        model.eval()
        return processor, model

    async def agenerate(self, request: GenerationRequest) -> Generation:
        return await self.batcher.submit(request)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate for several requests in one left-padded batch (blocking)."""
        import torch

        if not requests:
            return []
        texts = [
            self.processor.apply_chat_template(
                [
                    {"role": m["role"], "content": _content_for_template(m["content"])}
                    for m in r.messages
                ],
                tokenize=False,
                add_generation_prompt=True,
            )
            for r in requests
        ]
        images = [image.image for r in requests for image in r.images]
        first = requests[0]
        stop = _contract_stops(first.stop)
        try:
            inputs = self.processor(
                text=texts, images=images or None, padding=True, return_tensors="pt"
            ).to(self.device)
            sampling = first.temperature > 0
            generate_kwargs: dict[str, Any] = {
                "max_new_tokens": first.max_new_tokens,
                "do_sample": sampling,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if sampling:
                generate_kwargs["temperature"] = first.temperature
                if first.top_p is not None:
                    generate_kwargs["top_p"] = first.top_p
            if stop:
                generate_kwargs["stop_strings"] = stop
                generate_kwargs["tokenizer"] = self.tokenizer
            with self._generate_lock, torch.inference_mode():
                # Seeded under the lock: no other batch can draw from the random state
                # between the seed and this generate.
                if first.seed is not None:
                    torch.manual_seed(first.seed)
                output = self.model.generate(**inputs, **generate_kwargs)
        except Exception as exc:  # torch / processor errors become one typed error
            raise BackendError(f"local generation with {self.model_name!r} failed: {exc}") from exc
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = output[:, prompt_length:]
        pad_id = self.tokenizer.pad_token_id
        results = []
        for row, mask in zip(new_tokens, inputs["attention_mask"], strict=True):
            completion = int((row != pad_id).sum())
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            results.append(
                Generation(
                    text=truncate_after_stop(text, stop),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=completion,
                )
            )
        return results

    async def aclose(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None
