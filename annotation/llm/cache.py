"""The request cache: every LLM reply received, keyed by what determined it.

Input: the model, the prompt version, the sampling parameters and the rendered messages
of a request. Output: the stored completion, if this exact request was answered before.

The cache is a sqlite file in the user cache directory (``$LLMCA_CACHE_DIR`` overrides it),
never inside a dataset. It makes a rerun free, and a killed run resumable without sending a
request twice: replies are stored as they arrive, before any shard is written. It is
consulted before the local LLM server is started, so a fully cached rerun starts none.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "LLMCA_CACHE_DIR"


def default_cache_path() -> Path:
    """``$LLMCA_CACHE_DIR/llm-cache.sqlite``, else the platform's user cache directory."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override) / "llm-cache.sqlite"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmca-data")) / "llm-cache.sqlite"


def request_key(model: str, prompt_version: str, params: dict[str, Any], messages: list[dict[str, str]]) -> str:
    """sha256 of the canonical JSON of everything that determines a reply."""
    body = json.dumps([model, prompt_version, params, messages], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class CachedReply:
    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    cost_usd: float
    finish_reason: str


class ReplyCache:
    """A thread-safe sqlite store of replies (WAL mode, one row per request key)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, prompt_version TEXT, "
            "created REAL, text TEXT, tokens_in INTEGER, tokens_out INTEGER, latency_s REAL, cost_usd REAL, "
            "finish_reason TEXT)"
        )
        self._db.commit()

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, tokens_in, tokens_out, latency_s, cost_usd, finish_reason FROM replies WHERE key = ?",
                (key,),
            ).fetchone()
        return CachedReply(*row) if row else None

    def put(self, key: str, model: str, prompt_version: str, reply: CachedReply) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, prompt_version, time.time(), *asdict(reply).values()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM replies").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
