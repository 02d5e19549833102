"""The request cache: every LLM reply received, keyed by what determined it.

Input: the model, the prompt version, the sampling parameters and the rendered messages
of a request. Output: the stored completion, if this exact request was answered before.

The cache is a sqlite file in the user cache directory (``$LLMCA_CACHE_DIR`` overrides it),
never inside a dataset. It makes a rerun free, and a killed run resumable without sending a
request twice: replies are stored as they arrive, before any shard is written. It is
consulted before the local LLM server is started, so a fully cached rerun starts none.

The same file records the Batch API's submissions (``BatchRecord``, table ``batches``): the
input file id is stored before the batch is created, so a rerun after a crash finds its batch
again instead of paying for the requests twice.
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


@dataclass(frozen=True)
class BatchRecord:
    """One submission of one part (a file of requests) to the Batch API."""

    part: str
    """sha256 of the part's JSONL bytes."""
    attempt: int
    """0 for the part's first batch; a consumed batch's part asked again gets a new attempt."""
    input_file_id: str
    batch_id: str
    """Empty until the batch is created."""
    consumed: bool
    """Its results were read into the cache (a rerun never reuses a consumed batch)."""


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
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (part TEXT, attempt INTEGER, input_file_id TEXT, batch_id TEXT, "
            "consumed INTEGER, created REAL, PRIMARY KEY (part, attempt))"
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

    def batch_record(self, part: str) -> BatchRecord | None:
        """The latest submission of ``part``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT part, attempt, input_file_id, batch_id, consumed FROM batches WHERE part = ? "
                "ORDER BY attempt DESC LIMIT 1",
                (part,),
            ).fetchone()
        return BatchRecord(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

    def save_batch_record(self, record: BatchRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                (record.part, record.attempt, record.input_file_id, record.batch_id, int(record.consumed), time.time()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM replies").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
