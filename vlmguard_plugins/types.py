"""The data that flows through the guard: requests, results, risk levels."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "HISTORY_TURNS_CAP",
    "MAX_HISTORY_TURNS",
    "FailurePolicyName",
    "HistoryOverflow",
    "HistoryRole",
    "HistoryTurn",
    "RewriteRequest",
    "RewriteResult",
    "Risk",
    "Usage",
]

MAX_HISTORY_TURNS = 32
"""Default number of other turns the rewriter reads with a request (``max_history_turns``)."""

HISTORY_TURNS_CAP = 256
"""Hard upper bound on the history a :class:`RewriteRequest` may carry."""

HistoryOverflow = Literal["refuse", "trim"]
"""What happens when a conversation has more history than the rewriter reads: refuse the
request (default: nothing reaches the model unread), or ``trim`` the oldest text from
what the rewriter reads (an explicit opt-in; images are never trimmed)."""

FailurePolicyName = Literal["shield", "raise", "passthrough", "block"]


class Risk(str, Enum):
    """The risk level the rewriter assigns to a request, ordered NONE < LOW < MEDIUM < HIGH."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank < other.rank


_RISK_ORDER = [Risk.NONE, Risk.LOW, Risk.MEDIUM, Risk.HIGH]


HistoryRole = Literal["user", "assistant", "system", "tool"]


class HistoryTurn(BaseModel):
    """One other turn of the conversation: its text and how many images it carried.

    The images themselves travel in :attr:`RewriteRequest.images`, earlier turns' images
    first and in conversation order, so the rewriter judges an image sent in turn 1
    together with a follow-up in turn 3.  ``images`` counts the ones of this turn.
    """

    model_config = ConfigDict(frozen=True)

    role: HistoryRole
    text: str
    images: int = Field(default=0, ge=0)


class RewriteRequest(BaseModel):
    """What the rewriter is asked to rewrite.

    ``images`` accepts a path, ``bytes``, a ``PIL.Image.Image``, a ``data:`` URL or an
    http(s) URL (remote fetching follows the rewriter's URL policy).
    ``allow_local_files`` is False when the request was built from a framework
    message, so that a path or ``file://`` URL inside user-controlled content cannot
    make the guard read local files.

    When ``history`` turns carry images (``HistoryTurn.images``), ``images`` starts
    with those, in conversation order, and ends with the images of this request.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    images: list[Any] = Field(default_factory=list)
    history: list[HistoryTurn] = Field(default_factory=list, max_length=HISTORY_TURNS_CAP)
    allow_local_files: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("images", mode="before")
    @classmethod
    def _one_image_is_a_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return list(value)
        return [value]


class Usage(BaseModel):
    """Tokens the rewriter model consumed for one rewrite (zero when nothing was generated)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class RewriteResult(BaseModel):
    """The outcome of one rewrite.

    ``prompt`` is what to send to the VLM in place of the user's text.  When the
    failure policy produced it, ``fallback`` names the reason, ``action`` says which
    policy acted and ``risk`` is ``None``: the risk is unknown, never invented.
    """

    prompt: str
    original: str
    analysis: str = ""
    risk: Risk | None = Risk.NONE
    changed: bool = False
    fallback: str | None = None
    action: Literal["rewrite", "unchanged", "shield", "passthrough", "block"] = "rewrite"
    latency_ms: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    raw: str | None = None
    cached: bool = False

    @property
    def risk_label(self) -> str:
        """``risk`` as a label for metrics and reports: its value, or ``unknown``."""
        return self.risk.value if self.risk is not None else "unknown"

    @property
    def blocked(self) -> bool:
        """True when the failure policy decided the VLM must decline."""
        return self.action == "block"
