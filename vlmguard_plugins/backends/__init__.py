"""Backends: where the rewriter model runs.

``load_backend(name, **kwargs)`` builds one by name. Built-in names are
``transformers`` (a local model), ``openai`` (any OpenAI-compatible server) and
``scripted`` (fixed outputs, for tests).  Other packages add backends through the
``vlmguard_plugins.backends`` entry-point group, pointing at a class or factory that
takes keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigurationError
from .base import STOP_SEQUENCE, Backend, Generation, GenerationRequest, truncate_after_stop

ENTRY_POINT_GROUP = "vlmguard_plugins.backends"

_BUILTIN: dict[str, str] = {
    "transformers": "vlmguard_plugins.backends.transformers:TransformersBackend",
    "openai": "vlmguard_plugins.backends.openai:OpenAIBackend",
    "scripted": "vlmguard_plugins.testing:ScriptedBackend",
}


def _import(target: str) -> Callable[..., Backend]:
    from importlib import import_module

    module_name, _, attribute = target.partition(":")
    return getattr(import_module(module_name), attribute)


def available_backends() -> list[str]:
    """Names ``load_backend`` accepts: the built-in ones and those from entry points."""
    names = set(_BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _build(name: str, factory: Callable[..., Backend], kwargs: dict[str, Any]) -> Backend:
    import inspect

    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"invalid settings for backend {name!r}: {exc}") from exc
    except ValueError:  # no signature to check (a C callable): let the call decide
        pass
    return factory(**kwargs)


_EXTRA_OF_BACKEND = {"transformers": "local", "openai": "remote"}


def _is_own_module(module: str | None) -> bool:
    """True for a module of this package: a bug to report, not an extra to install."""
    return module is not None and module.split(".")[0] == __name__.split(".")[0]


def _install_hint(name: str, exc: ImportError) -> ConfigurationError:
    extra = _EXTRA_OF_BACKEND.get(name, "all")
    return ConfigurationError(
        f"backend {name!r} needs extra packages: pip install 'vlmguard-plugins[{extra}]' ({exc})"
    )


def load_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend called ``name`` with ``kwargs``.

    Example::

        load_backend("transformers", model="Qwen/Qwen2.5-VL-3B-Instruct")
        load_backend("openai", model="vlmguard-r1", base_url="http://localhost:8000/v1")
    """
    if name in _BUILTIN:
        try:
            factory = _import(_BUILTIN[name])
            # The backends import their heavy packages (torch, transformers, openai)
            # lazily, when built: a missing one surfaces here, not at import time.
            return _build(name, factory, kwargs)
        except ModuleNotFoundError as exc:
            if _is_own_module(exc.name):
                raise
            raise _install_hint(name, exc) from exc
        except ImportError as exc:
            raise _install_hint(name, exc) from exc
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _build(name, ep.load(), kwargs)
    raise ConfigurationError(
        f"unknown backend {name!r}; available: {', '.join(available_backends())}"
    )


__all__ = [
    "STOP_SEQUENCE",
    "Backend",
    "Generation",
    "GenerationRequest",
    "available_backends",
    "load_backend",
    "truncate_after_stop",
]
