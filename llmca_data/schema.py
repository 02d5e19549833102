"""Arrow schemas of the dataset tables, the critic columns, and numpy ↔ Arrow conversion.

Input: an ``EnvSpec`` (sizes), critic ids, numpy arrays. Output: ``pyarrow`` schemas, fields
and columns whose per-agent columns are ``fixed_size_list`` (never null), as DESIGN.md §6
fixes. This is the one module that spells a dataset column's name or Arrow type: the critic
columns ``credit_<critic>`` (``[N] float32``, NaN when missing) and ``task_<critic>``
(``[N] int16``, −1 when missing) and their inverse (column → critic id) live here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.envs.base import EnvSpec

METADATA_KEY = b"llmca"
ANNOTATION_STATUSES: tuple[str, ...] = ("ok", "repaired", "failed")
"""``annotations.status`` values: valid reply, valid after a corrective retry, failed (NaN credits)."""


def fsl(dtype: pa.DataType, *shape: int) -> pa.DataType:
    """Nested fixed-size list type; ``fsl(float32, N, D)`` is ``[N][D] float32``."""
    out = dtype
    for size in reversed(shape):
        out = pa.list_(out, size)
    return out


@dataclass(frozen=True)
class CriticColumnKind:
    """One kind of per-critic steps column: its name prefix, Arrow/numpy value type and missing value."""

    prefix: str
    value_type: pa.DataType
    dtype: type[np.generic]
    missing: float
    """The value of a step the critic did not annotate or failed on (lists are never null)."""

    def column(self, critic_id: str) -> str:
        """``llm-mca`` → ``<prefix>llm_mca``."""
        return self.prefix + critic_id.replace("-", "_")

    def field(self, column: str, n_agents: int) -> pa.Field:
        """The Arrow field of ``column`` (a name with this prefix) for ``n_agents`` agents."""
        return pa.field(column, fsl(self.value_type, n_agents), nullable=False)

    def empty(self, rows: int, n_agents: int) -> np.ndarray:
        """``[rows, N]`` filled with the missing value."""
        return np.full((rows, n_agents), self.missing, self.dtype)


CREDIT = CriticColumnKind("credit_", pa.float32(), np.float32, float("nan"))
"""``credit_<critic>``: a critic's per-agent credits; NaN where it failed or has not run."""
TASK = CriticColumnKind("task_", pa.int16(), np.int16, -1)
"""``task_<critic>``: a task critic's per-agent task assignments (LLM-TACA); −1 where none."""
CRITIC_COLUMN_KINDS: tuple[CriticColumnKind, ...] = (CREDIT, TASK)


def credit_column(critic_id: str) -> str:
    """Column name of a critic's credits: ``llm-mca`` → ``credit_llm_mca``."""
    return CREDIT.column(critic_id)


def task_column(critic_id: str) -> str:
    """Column of a critic's task assignments: ``llm-taca`` → ``task_llm_taca``."""
    return TASK.column(critic_id)


def critic_column_kind(column: str) -> CriticColumnKind | None:
    """The kind of a ``credit_*`` / ``task_*`` column; None for any other column."""
    return next((k for k in CRITIC_COLUMN_KINDS if column.startswith(k.prefix)), None)


def critic_of_column(column: str, known: Mapping[str, str] | None = None) -> str:
    """Inverse of ``credit_column`` / ``task_column``: ``credit_llm_mca`` → ``llm-mca``.

    ``known`` maps credit columns to the ids recorded in ``meta/info.json`` (see
    ``info.critic_columns``); they win, so an id is spelled as its critic spelled it.

    Raises:
        ValueError: ``column`` is not a critic column.
    """
    kind = critic_column_kind(column)
    if kind is None:
        raise ValueError(f"{column!r} is not a critic column (credit_<critic> or task_<critic>)")
    credit = CREDIT.column(column.removeprefix(kind.prefix))
    if known and credit in known:
        return known[credit]
    return column.removeprefix(kind.prefix).replace("_", "-")


def critic_field(column: str, n_agents: int) -> pa.Field:
    """The Arrow field of a ``credit_*`` or ``task_*`` column (ValueError for any other name)."""
    kind = critic_column_kind(column)
    if kind is None:
        raise ValueError(f"{column!r} is not a critic column (credit_<critic> or task_<critic>)")
    return kind.field(column, n_agents)


def _metadata(spec: EnvSpec, kind: str) -> dict[bytes, bytes]:
    meta = {"schema_version": SCHEMA_VERSION, "package_version": __version__, "env_id": spec.env_id, "kind": kind}
    return {METADATA_KEY: json.dumps(meta).encode()}


def steps_schema(spec: EnvSpec, critics: Sequence[str] = (), task_critics: Sequence[str] = ()) -> pa.Schema:
    """The steps table: contract columns, then ``credit_<c>`` per critic and ``task_<c>`` per task critic."""
    n, d, a, s = spec.n_agents, spec.obs_dim, spec.n_actions, spec.state_dim
    fields = [
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("t", pa.int32(), nullable=False),
        pa.field("obs", fsl(pa.float32(), n, d), nullable=False),
        pa.field("state", fsl(pa.float32(), s), nullable=False),
        pa.field("action", fsl(pa.int16(), n), nullable=False),
        pa.field("action_mask", fsl(pa.bool_(), n, a), nullable=False),
        pa.field("reward_team", pa.float32(), nullable=False),
        pa.field("reward_env", fsl(pa.float32(), n), nullable=False),
        pa.field("cost", fsl(pa.float32(), n), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
    ]
    fields += [CREDIT.field(credit_column(c), n) for c in critics]
    fields += [TASK.field(task_column(c), n) for c in task_critics]
    return pa.schema(fields, metadata=_metadata(spec, "steps"))


def episodes_schema(spec: EnvSpec) -> pa.Schema:
    n, d, a, s = spec.n_agents, spec.obs_dim, spec.n_actions, spec.state_dim
    fields = [
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("tier", pa.string(), nullable=False),
        pa.field("env_id", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("env_kwargs", pa.string(), nullable=False),
        pa.field("versions", pa.string(), nullable=False),
        pa.field("policy_id", pa.string(), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
        pa.field("return_team", pa.float32(), nullable=False),
        pa.field("return_env", fsl(pa.float32(), n), nullable=False),
        pa.field("cost_total", fsl(pa.float32(), n), nullable=False),
        pa.field("success", pa.bool_(), nullable=False),
        pa.field("final_obs", fsl(pa.float32(), n, d), nullable=False),
        pa.field("final_state", fsl(pa.float32(), s), nullable=False),
        pa.field("final_action_mask", fsl(pa.bool_(), n, a), nullable=False),
    ]
    return pa.schema(fields, metadata=_metadata(spec, "episodes"))


def annotations_schema(spec: EnvSpec) -> pa.Schema:
    """One row per (episode, critic): who annotated, with what, how it went, and the rationales."""
    fields = [
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("critic", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("rationale", fsl(pa.string(), spec.n_agents), nullable=False),
        pa.field("summary", pa.string(), nullable=False),
        pa.field("tokens_in", pa.int64(), nullable=False),
        pa.field("tokens_out", pa.int64(), nullable=False),
        pa.field("latency_s", pa.float32(), nullable=False),
        pa.field("cost_usd", pa.float32(), nullable=False),
        pa.field("raw_response", pa.string(), nullable=False),
    ]
    return pa.schema(fields, metadata=_metadata(spec, "annotations"))


def to_fsl(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """Numpy ``[M, *inner]`` → Arrow ``fixed_size_list`` array of M rows (zero-copy where possible)."""
    arr: pa.Array = pa.array(np.ascontiguousarray(values).reshape(-1), type=dtype)
    for size in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return arr


def to_column(values: Any, dtype: pa.DataType) -> pa.Array:
    """Values of one column → an Arrow array of ``dtype`` (numpy ``[M, *shape]`` for fixed-size lists)."""
    if not pa.types.is_fixed_size_list(dtype):
        return pa.array(values, type=dtype)
    leaf = dtype
    while pa.types.is_fixed_size_list(leaf):
        leaf = leaf.value_type
    return to_fsl(np.asarray(values), leaf)


def table_of(schema: pa.Schema, columns: Mapping[str, Any]) -> pa.Table:
    """A table of ``schema`` from one value per field (see ``to_column``)."""
    return pa.Table.from_arrays([to_column(columns[f.name], f.type) for f in schema], schema=schema)


def from_fsl(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Arrow fixed-size-list column → numpy ``[M, *shape]`` (flattening every nesting level)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column
    for _ in shape:
        flat = flat.flatten()
    out: np.ndarray = flat.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
    return out


def schema_mismatch(actual: pa.Schema, expected: pa.Schema, n_agents: int | None = None) -> str | None:
    """A readable description of how ``actual`` differs from ``expected`` (metadata ignored), or None.

    Critic columns (``credit_*`` / ``task_*``) beyond ``expected`` are allowed; with
    ``n_agents`` (a steps table) they must have their type for that many agents.
    """
    exp = {f.name: f.type for f in expected}
    act = {f.name: f.type for f in actual}
    missing = [n for n in exp if n not in act]
    extra = [n for n in act if n not in exp and critic_column_kind(n) is None]
    wrong = [f"{n}: {act[n]} (expected {exp[n]})" for n in exp if n in act and act[n] != exp[n]]
    if n_agents is not None:
        critic = {n: critic_field(n, n_agents).type for n in act if n not in exp and critic_column_kind(n)}
        wrong += [f"{n}: {act[n]} (expected {want})" for n, want in critic.items() if act[n] != want]
    parts = []
    if missing:
        parts.append("missing columns " + ", ".join(missing))
    if extra:
        parts.append("unexpected columns " + ", ".join(extra))
    if wrong:
        parts.append("wrong types " + "; ".join(wrong))
    return "; ".join(parts) or None
