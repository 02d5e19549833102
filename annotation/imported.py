"""Credits computed elsewhere, imported under a critic id of the user's choosing.

Input: a Parquet file with columns ``episode_id`` (int), ``t`` (int) and ``credit`` (a list
of N floats per row, N the agents of that row's env, so one file may cover envs with different
agent counts), keyed by (``episode_id``, ``t``). Output: a ``Critic`` that serves those
credits to ``annotate``; ``check_coverage`` first proves the file covers every step of the
episodes to annotate, so nothing is written from an incomplete file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmca_data.dataset import Dataset
from llmca_data.envs.base import MultiAgentEnv
from llmca_data.errors import LlmcaError, ShardError
from llmca_data.rollout import Episode
from llmca_data.shards import regular_file

from .critic import CriticOutput
from .registry import check_import_id


class CreditFileError(LlmcaError, ValueError):
    """An import file that is unreadable, misshapen, or does not cover the dataset."""


def _check_types(path: Path, table: pa.Table) -> None:
    """Integer keys and lists of numbers without nulls; values that overflow float32 fail their
    episode later (``stored_output``), so one bad episode does not refuse the file."""
    for name in ("episode_id", "t"):
        if not pa.types.is_integer(table.schema.field(name).type):
            raise CreditFileError(
                f"{path}: column {name} has type {table.schema.field(name).type}; it must be an integer type "
                "(float ids are not rounded or truncated): cast it to int64"
            )
    credit = table.schema.field("credit").type
    if not (pa.types.is_list(credit) or pa.types.is_large_list(credit) or pa.types.is_fixed_size_list(credit)) or not (
        pa.types.is_floating(credit.value_type) or pa.types.is_integer(credit.value_type)
    ):
        raise CreditFileError(f"{path}: column credit has type {credit}; it must be a list of floats per row")
    nulls = sum(table.column(name).null_count for name in ("episode_id", "t", "credit"))
    nulls += pc.list_flatten(table.column("credit")).null_count
    if nulls:
        raise CreditFileError(
            f"{path}: {nulls} null value(s) in episode_id, t or credit; write NaN for a credit you do not have "
            "(its episode is then stored as failed)"
        )


class ImportedCritic:
    needs_env = False

    def __init__(self, critic_id: str, path: Path) -> None:
        self.critic_id = check_import_id(critic_id)
        self.path = path
        try:
            table = pq.read_table(regular_file(path), columns=["episode_id", "t", "credit"])
        except (OSError, pa.ArrowException, KeyError, ShardError) as exc:
            raise CreditFileError(
                f"{path}: cannot read columns episode_id, t, credit ({exc}); write a Parquet file with "
                "episode_id (int), t (int) and credit (list of N floats per row)"
            ) from exc
        _check_types(path, table)
        table = table.sort_by([("episode_id", "ascending"), ("t", "ascending")])
        self._ids = table.column("episode_id").to_numpy().astype(np.int64)  # [M]
        self._t = table.column("t").to_numpy().astype(np.int64)  # [M]
        # Rows may differ in length between episodes (envs with other agent counts); each episode's
        # rows must all have its N entries, which ``annotate`` checks.
        self._lengths = pc.list_value_length(table.column("credit")).to_numpy(zero_copy_only=False).astype(np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._lengths)])  # [M + 1] offsets into the values
        with np.errstate(over="ignore"):  # beyond float32: inf, which fails its episode in stored_output
            self._values = pc.list_flatten(table.column("credit")).to_numpy(zero_copy_only=False).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {"type": "imported", "file": str(self.path)}

    def check_coverage(self, root: Path, envs: tuple[str, ...] = (), tiers: tuple[str, ...] = ()) -> int:
        """Raise unless the file has exactly one row for every step to annotate; returns the step count.

        Raises:
            DatasetNotFoundError: ``root`` holds no dataset.
            CreditFileError: duplicate rows, or steps the file does not cover.
        """
        ds = Dataset.open(root)
        have = set(zip(self._ids.tolist(), self._t.tolist(), strict=True))
        if len(have) != self._ids.size:
            raise CreditFileError(f"{self.path}: duplicate (episode_id, t) rows")
        needed = 0
        for name in ds.shards(kind="steps"):
            if (envs and name.env_id not in envs) or (tiers and name.tier not in tiers):
                continue
            keys = ds.read(name, ["episode_id", "t"])
            missing = [
                k for k in zip(*(keys.column(c).to_pylist() for c in ("episode_id", "t")), strict=True) if k not in have
            ]
            if missing:
                raise CreditFileError(
                    f"{self.path} does not cover {len(missing)} steps of {name} (first: episode_id={missing[0][0]}, "
                    f"t={missing[0][1]}); the file needs one row per (episode_id, t) of every episode to annotate"
                )
            needed += keys.num_rows
        return needed

    def annotate(self, episode: Episode, env: MultiAgentEnv | None = None) -> CriticOutput:
        lo, hi = np.searchsorted(self._ids, [episode.episode_id, episode.episode_id + 1])
        n = episode.reward_env.shape[1]
        lengths = sorted(set(self._lengths[lo:hi].tolist()))
        if hi - lo != episode.length or lengths not in ([], [n]):
            return CriticOutput.failed(
                episode.length, n, f"imported credits have {hi - lo} rows of {'/'.join(map(str, lengths)) or 0} "
                f"values, need {episode.length} rows of {n}",
            )  # fmt: skip
        if (self._t[lo:hi] != np.arange(episode.length)).any():
            return CriticOutput.failed(
                episode.length, n, f"imported credits must have one row for each t = 0..{episode.length - 1}"
            )
        credits = self._values[self._starts[lo] : self._starts[hi]].reshape(episode.length, n)  # [T, N]
        return CriticOutput(credits.copy())
