"""The core conversation model: ordered turns of ordered parts (text, image, other).

Every entry point converts its framework's messages into a :class:`Conversation`, asks
the core to guard it, and converts the result back.  A part keeps the framework object
it came from (``raw``), so a converter writes back exactly what it read for every part
the guard did not change, and a message keeps its own object (``raw``) for its other
fields (name, tool calls, metadata).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
"""The guard's view of a message's role; converters map their own names onto these
(``developer`` -> system, ``human`` -> user, ``ai``/``model``/``chatbot`` -> assistant,
``function`` -> tool)."""


@dataclass(frozen=True)
class TextPart:
    """A piece of text."""

    text: str
    raw: Any = None
    """The framework's own object for this part (a dict, a block), ``None`` for a string."""

    @property
    def kind(self) -> str:
        return "text"


@dataclass(frozen=True)
class ImagePart:
    """An image, as a source the core image loader accepts.

    ``source`` is a ``data:`` or http(s) URL string, ``bytes``, a ``pathlib.Path`` or a
    ``PIL.Image.Image``.  It is ``None`` when the part names an image the guard cannot
    read (a provider file id, an empty block): ``problem`` then says why, and the
    request is refused, because an image the guard has not seen must not reach the VLM.
    """

    source: Any
    raw: Any = None
    problem: str | None = None

    @property
    def kind(self) -> str:
        return "image"


@dataclass(frozen=True)
class OtherPart:
    """A part the guard does not read: audio, video, a file, a tool call, an unknown type.

    ``kind`` is the part's type as the framework names it (``input_audio``,
    ``video_url``, ``file``, ``DocumentBlock``...).  Whether it may pass is the core's
    decision (:func:`vlmguard_plugins.conversation.check_coverage`), never the
    converter's.
    """

    kind: str
    raw: Any = None


Part = TextPart | ImagePart | OtherPart


@dataclass(frozen=True)
class Turn:
    """One message: its role, its ordered parts, and the framework object it came from.

    ``text_only`` records that the message's content was a plain string (a converter
    writes a string back when the parts are still one text).
    """

    role: Role
    parts: tuple[Part, ...] = ()
    raw: Any = None
    text_only: bool = False
    source_role: str = ""
    """The role as the framework spelled it (``developer``, ``human``, ``function``...)."""

    @property
    def text(self) -> str:
        """The text parts joined by newlines (empty ones skipped)."""
        return "\n".join(
            part.text for part in self.parts if isinstance(part, TextPart) and part.text
        )

    @property
    def images(self) -> list[ImagePart]:
        return [part for part in self.parts if isinstance(part, ImagePart)]

    @property
    def others(self) -> list[OtherPart]:
        return [part for part in self.parts if isinstance(part, OtherPart)]

    def with_parts(self, parts: Sequence[Part]) -> Turn:
        """This turn with ``parts`` in place of its own (the same role and raw message)."""
        return replace(self, parts=tuple(parts), text_only=self.text_only and _one_text(parts))


def _one_text(parts: Sequence[Part]) -> bool:
    return len(parts) == 1 and isinstance(parts[0], TextPart)


@dataclass(frozen=True)
class Conversation:
    """An ordered list of turns."""

    turns: tuple[Turn, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def __len__(self) -> int:
        return len(self.turns)

    def last_user_index(self) -> int | None:
        """The position of the last user turn, or ``None`` when there is none."""
        for index in range(len(self.turns) - 1, -1, -1):
            if self.turns[index].role == "user":
                return index
        return None

    def replace_turn(self, index: int, turn: Turn) -> Conversation:
        """A copy with ``turn`` at ``index``."""
        turns = list(self.turns)
        turns[index] = turn
        return Conversation(tuple(turns))


__all__ = [
    "Conversation",
    "ImagePart",
    "OtherPart",
    "Part",
    "Role",
    "TextPart",
    "Turn",
]
