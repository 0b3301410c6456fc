"""Load, validate and limit images once; encode them lazily, at most once per size.

Every image source the public API accepts ends up as a :class:`PreparedImage`: a
decoded RGB ``PIL.Image`` that passed the limits, with a content hash computed on
demand (for the cache) and data-URL encodings memoised (for remote backends).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import (
    ImageDecodeError,
    ImageInputError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    URLPolicyError,
)
from .urls import URLPolicy, fetch_image_bytes

DEFAULT_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every image before it is decoded.

    ``max_pixels`` is checked from the header, so a decompression bomb is refused
    before any pixel is allocated.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side: int = 16_384
    max_images: int = 8
    formats: frozenset[str] = DEFAULT_FORMATS


@dataclass(eq=False)
class PreparedImage:
    """A validated, decoded image ready for any backend."""

    image: Image.Image
    source_format: str | None = None
    _raw: bytes | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)
    _encoded: dict[tuple[int | None, str], str] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def sha256(self) -> str:
        """Content hash (of the source bytes when known, else of the pixels)."""
        if self._digest is None:
            data = self._raw if self._raw is not None else self.image.tobytes()
            self._digest = hashlib.sha256(data).hexdigest()
        return self._digest

    def resized(self, max_side: int | None) -> Image.Image:
        """The image scaled down so its longest side is at most ``max_side``."""
        if max_side is None or max(self.image.size) <= max_side:
            return self.image
        scale = max_side / max(self.image.size)
        new_size = (
            max(1, round(self.image.width * scale)),
            max(1, round(self.image.height * scale)),
        )
        return self.image.resize(new_size, Image.Resampling.BICUBIC)

    def data_url(self, max_side: int | None = None, fmt: str | None = None) -> str:
        """A base64 ``data:`` URL of the image, computed once per (size, format).

        When the image needs no resizing and came as PNG, JPEG, WEBP or GIF bytes, the
        original bytes are used as they are: no re-encoding at all.  Otherwise it is
        encoded as ``fmt`` (PNG by default, with fast compression; JPEG is smaller for
        photographs).
        """
        key = (max_side, (fmt or "").upper())
        if key not in self._encoded:
            self._encoded[key] = self._build_data_url(max_side, fmt)
        return self._encoded[key]

    def _build_data_url(self, max_side: int | None, fmt: str | None) -> str:
        fits = max_side is None or max(self.image.size) <= max_side
        reusable = self._raw is not None and self.source_format in _WEB_FORMATS
        if fits and reusable and (fmt is None or fmt.upper() == self.source_format):
            data, chosen = self._raw, self.source_format
        else:
            chosen = (fmt or "PNG").upper()
            buffer = io.BytesIO()
            options = {"compress_level": 1} if chosen == "PNG" else {"quality": 90}
            self.resized(max_side).save(buffer, format=chosen, **options)
            data = buffer.getvalue()
        mime = "image/jpeg" if chosen == "JPEG" else f"image/{chosen.lower()}"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"  # type: ignore[arg-type]


_WEB_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})


def _decode(data: bytes, limits: ImageLimits, label: str) -> PreparedImage:
    if len(data) == 0:
        raise ImageDecodeError(f"image {label} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image {label} is {len(data)} bytes, over the {limits.max_bytes}-byte limit"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            _check_header(opened, limits, label)
            opened.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image {label} is a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"image {label} is not a readable image (corrupt data or not an image at all)"
        ) from exc
    except ImageInputError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image {label} could not be decoded: {exc}") from exc
    source_format = opened.format
    image = opened if opened.mode == "RGB" else opened.convert("RGB")
    return PreparedImage(image=image, source_format=source_format, _raw=data)


def _check_header(image: Image.Image, limits: ImageLimits, label: str) -> None:
    if image.format not in limits.formats:
        allowed = ", ".join(sorted(limits.formats))
        raise UnsupportedImageFormatError(
            f"image {label} is in format {image.format or 'unknown'}; accepted formats: {allowed}"
        )
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageTooLargeError(
            f"image {label} is {width}x{height} pixels, over the limit of "
            f"{limits.max_pixels} pixels / {limits.max_side} per side"
        )


def _from_pil(image: Image.Image, limits: ImageLimits) -> PreparedImage:
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageTooLargeError(
            f"image is {width}x{height} pixels, over the limit of {limits.max_pixels} pixels"
        )
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return PreparedImage(image=rgb, source_format=image.format)


def _from_data_url(url: str, limits: ImageLimits) -> PreparedImage:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise ImageDecodeError(
            "data: URL images must be base64 encoded (data:image/...;base64,...)"
        )
    if len(payload) > limits.max_bytes * 4 // 3 + 4:
        raise ImageTooLargeError(f"data: URL image is over the {limits.max_bytes}-byte limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"data: URL image has invalid base64: {exc}") from exc
    return _decode(data, limits, "from data: URL")


def _from_path(path: Path, limits: ImageLimits) -> PreparedImage:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageInputError(f"image file {str(path)!r} cannot be read: {exc.strerror}") from exc
    if not path.is_file():
        raise ImageInputError(f"image path {str(path)!r} is not a file")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"image file {str(path)!r} is {size} bytes, over the {limits.max_bytes}-byte limit"
        )
    return _decode(path.read_bytes(), limits, repr(str(path)))


def load_image(
    source: Any,
    *,
    limits: ImageLimits | None = None,
    url_policy: URLPolicy | None = None,
    allow_local_files: bool = True,
) -> PreparedImage:
    """Turn any accepted image source into a validated :class:`PreparedImage`.

    Accepted: ``PreparedImage``, ``PIL.Image.Image``, ``bytes``/``bytearray``, a
    ``data:`` URL, an http(s) URL (per ``url_policy``), a path (``str`` or
    ``pathlib.Path``; only when ``allow_local_files``).

    Raises:
        ImageInputError: or one of its subclasses, with a message naming the problem.
    """
    limits = limits or ImageLimits()
    url_policy = url_policy or URLPolicy()
    if isinstance(source, PreparedImage):
        return source
    if isinstance(source, Image.Image):
        return _from_pil(source, limits)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), limits, "from bytes")
    if isinstance(source, Path):
        return _load_local(source, allow_local_files, limits)
    if isinstance(source, str):
        text = source.strip()
        lowered = text[:16].lower()
        if lowered.startswith("data:"):
            return _from_data_url(text, limits)
        if "://" in text[:16]:
            data = fetch_image_bytes(text, url_policy)
            return _decode(data, limits, repr(text))
        return _load_local(Path(text), allow_local_files, limits)
    raise ImageInputError(
        f"unsupported image source of type {type(source).__name__}; pass a path, bytes, "
        "a PIL image, a data: URL or an http(s) URL"
    )


def _load_local(path: Path, allow_local_files: bool, limits: ImageLimits) -> PreparedImage:
    if not allow_local_files:
        raise URLPolicyError(
            f"refused image source {str(path)!r}: local file paths are not accepted from "
            "this input (enable allow_local_files to read images from disk)"
        )
    return _from_path(path, limits)


def load_images(
    sources: list[Any],
    *,
    limits: ImageLimits | None = None,
    url_policy: URLPolicy | None = None,
    allow_local_files: bool = True,
) -> list[PreparedImage]:
    """Load several images, refusing more than ``limits.max_images``."""
    limits = limits or ImageLimits()
    if len(sources) > limits.max_images:
        raise ImageInputError(
            f"{len(sources)} images given; at most {limits.max_images} per request are accepted"
        )
    return [
        load_image(s, limits=limits, url_policy=url_policy, allow_local_files=allow_local_files)
        for s in sources
    ]
