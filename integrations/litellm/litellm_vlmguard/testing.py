"""A real LiteLLM proxy on loopback, for tests of a guarded deployment (yours and ours).

:class:`LiteLLMProxy` writes a ``config.yaml``, starts ``litellm --config`` in a
subprocess on a free 127.0.0.1 port and waits until it answers.  Nothing it starts
reaches the network: the model cost map is LiteLLM's bundled copy, telemetry is off,
and no database is configured::

    from litellm_vlmguard.testing import LiteLLMProxy, vlm_model_entry

    config = {
        "model_list": [vlm_model_entry("vlm", vlm_server.base_url, "fake-vlm")],
        "guardrails": [{"guardrail_name": "vlmguard", "litellm_params": {...}}],
    }
    with LiteLLMProxy(config, workdir=tmp_path) as proxy:
        client = OpenAI(base_url=proxy.base_url, api_key=proxy.master_key)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]  # PyYAML ships no inline types

from vlmguard_plugins.testing import Startable

MASTER_KEY = "sk-vlmguard-test-0123456789abcdef0123456789abcdef"
"""The proxy's master key in tests: clients send it as their API key."""

OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "NO_DOCKER": "True",
}
"""Environment that keeps the proxy off the network (bundled cost map, no telemetry)."""

_NETWORK_ENV = ("DATABASE_URL", "DIRECT_URL", "REDIS_HOST", "REDIS_URL", "STORE_MODEL_IN_DB")
"""Variables that would make the proxy connect somewhere; removed from its environment."""


def vlm_model_entry(name: str, base_url: str, served_model: str) -> dict[str, Any]:
    """A ``model_list`` entry: ``name`` on the proxy is ``served_model`` at ``base_url``."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{served_model}",
            "api_base": base_url,
            "api_key": "unused",
        },
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LiteLLMProxy(Startable):
    """``litellm --config`` in a subprocess on 127.0.0.1.

    Args:
        config: the proxy's ``config.yaml`` as a mapping; ``general_settings.master_key``
            is set to ``master_key``, and ``litellm_settings.telemetry: false`` is added
            when missing.
        workdir: where the config file and the proxy's log are written.
        pythonpath: folders put first on the proxy's ``PYTHONPATH`` (where the
            guardrail's module is, when it is not installed).
        env: further environment variables for the proxy.
        workers: the proxy's uvicorn worker processes.
        master_key: the key clients send; ``None`` runs the proxy without one (LiteLLM
            then has to be told that is intended: for loopback benchmarks only).
        startup_timeout_s: how long to wait for the proxy to answer.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        workdir: Path,
        pythonpath: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        master_key: str | None = MASTER_KEY,
        startup_timeout_s: float = 180.0,
    ) -> None:
        self.config = _with_test_defaults(config, master_key)
        self.master_key = master_key
        self.workdir = Path(workdir)
        self.pythonpath = list(pythonpath or [])
        self.env = dict(env or {})
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The proxy's root URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` to give clients."""
        return f"{self.url}/v1"

    @property
    def log_path(self) -> Path:
        """The proxy's combined stdout and stderr."""
        return self.workdir / "litellm-proxy.log"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the proxy's log (for a failure message)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def start(self) -> LiteLLMProxy:
        """Start the proxy and wait until it answers; raises ``RuntimeError`` if it does not."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "litellm-config.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if k not in _NETWORK_ENV}
        env.update(OFFLINE_ENV)
        if self.master_key is None:
            env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            [*self.pythonpath, *filter(None, [env.get("PYTHONPATH")])]
        )
        command = [_litellm_executable(), "--config", str(config_path)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.workers > 1:
            command += ["--num_workers", str(self.workers)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the LiteLLM proxy exited at startup:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the LiteLLM proxy did not start in time:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the proxy (its whole process group: workers included)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


def _with_test_defaults(config: Mapping[str, Any], master_key: str | None) -> dict[str, Any]:
    result = dict(config)
    general = dict(result.get("general_settings") or {})
    if master_key is not None:
        general["master_key"] = master_key
    result["general_settings"] = general
    settings = dict(result.get("litellm_settings") or {})
    settings.setdefault("telemetry", False)
    result["litellm_settings"] = settings
    return result


def _litellm_executable() -> str:
    # The proxy's CLI next to this interpreter (a virtual environment's bin), else on PATH.
    beside = Path(sys.executable).with_name("litellm")
    if beside.exists():
        return str(beside)
    found = shutil.which("litellm")
    if found is None:
        raise RuntimeError("the litellm CLI is not installed: pip install 'litellm[proxy]'")
    return found


__all__ = ["MASTER_KEY", "OFFLINE_ENV", "LiteLLMProxy", "free_port", "vlm_model_entry"]
