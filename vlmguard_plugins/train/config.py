"""Settings of the synthesis pipeline, from YAML or from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..backends import Backend, load_backend
from ..errors import ConfigurationError

__all__ = ["BackendSpec", "SynthConfig"]


class BackendSpec(BaseModel):
    """Which model to call and how: the arguments of :func:`load_backend`.

    Example (YAML)::

        teacher:
          backend: openai
          model: OpenGVLab/InternVL2_5-38B
          options: {base_url: http://localhost:8000/v1, timeout_s: 120}
    """

    model_config = ConfigDict(extra="forbid")

    backend: str = "openai"
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def build(self) -> Backend:
        """Create the backend."""
        kwargs = dict(self.options)
        if self.model is not None:
            kwargs["model"] = self.model
        return load_backend(self.backend, **kwargs)


class SynthConfig(BaseModel):
    """Everything ``vlmguard train synth`` needs.

    Args:
        input: the source file (VLGuard train JSON or generic JSONL).
        format: ``vlguard`` or ``jsonl``.
        image_root: folder the source's image paths are relative to (default: the
            source file's folder).
        output: the dataset folder to write (``metadata.jsonl``, ``images/``,
            ``stages.jsonl``, ``summary.json``); an existing one is resumed.
        teacher: the model that runs the three stages (required unless a backend is
            passed to :func:`~vlmguard_plugins.train.synthesize`).
        target: the VLM that answers; samples the missing unsafe responses and, with
            ``verify``, answers the rewritten prompts.
        judge: with ``verify``, rates the target's answers.
        verify: keep only samples whose rewrite gets a safe (and, for a benign
            request, helpful) answer.
        max_benign_fraction: at most this share of the samples is benign (the method
            used about one in ten); ``None`` keeps all.
        limit: process only the first ``limit`` samples (after the benign selection).
        concurrency: samples processed at once.
        max_new_tokens: generation limit for the teacher's stages.
        unsafe_temperature: sampling temperature for the target's unsafe responses.
    """

    model_config = ConfigDict(extra="forbid")

    input: Path
    format: Literal["vlguard", "jsonl"] = "jsonl"
    image_root: Path | None = None
    output: Path
    teacher: BackendSpec | None = None
    target: BackendSpec | None = None
    judge: BackendSpec | None = None
    verify: bool = False
    max_benign_fraction: float | None = Field(default=0.1, ge=0.0, le=1.0)
    limit: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=1024, ge=1)
    unsafe_temperature: float = Field(default=0.7, ge=0.0)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> SynthConfig:
        """Read a YAML file; ``overrides`` that are not None replace its values.

        Relative paths in the file are relative to the current directory, as on the
        command line.
        """
        import yaml  # type: ignore[import-untyped]

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigurationError(f"cannot read config {str(path)!r}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"config {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"config {str(path)!r} must be a mapping of settings")
        data.update({key: value for key, value in overrides.items() if value is not None})
        return cls.build(**data)

    @classmethod
    def build(cls, **data: Any) -> SynthConfig:
        """Validate settings, turning pydantic's error into a :class:`ConfigurationError`."""
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigurationError(f"invalid synthesis settings: {problems}") from exc
