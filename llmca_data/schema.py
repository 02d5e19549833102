"""Arrow schemas of the steps and episodes tables, and numpy → Arrow conversion.

Input: an ``EnvSpec`` (sizes) and numpy arrays. Output: ``pyarrow`` schemas and tables
whose per-agent columns are ``fixed_size_list`` (never null), as DESIGN.md §6 fixes.
"""

from __future__ import annotations

import json

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


def credit_column(critic_id: str) -> str:
    """Column name of a critic's credits: ``llm-mca`` → ``credit_llm_mca``."""
    return "credit_" + critic_id.replace("-", "_")


def _metadata(spec: EnvSpec, kind: str) -> dict[bytes, bytes]:
    meta = {"schema_version": SCHEMA_VERSION, "package_version": __version__, "env_id": spec.env_id, "kind": kind}
    return {METADATA_KEY: json.dumps(meta).encode()}


def steps_schema(spec: EnvSpec, critics: tuple[str, ...] = (), with_tasks: bool = False) -> pa.Schema:
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
    fields += [pa.field(credit_column(c), fsl(pa.float32(), n), nullable=False) for c in critics]
    if with_tasks:
        fields.append(pa.field("task_llm_taca", fsl(pa.int16(), n), nullable=False))
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


def from_fsl(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Arrow fixed-size-list column → numpy ``[M, *shape]`` (flattening every nesting level)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column
    for _ in shape:
        flat = flat.flatten()
    out: np.ndarray = flat.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
    return out


def schema_mismatch(actual: pa.Schema, expected: pa.Schema) -> str | None:
    """A readable description of how ``actual`` differs from ``expected`` (metadata ignored), or None."""
    exp = {f.name: f.type for f in expected}
    act = {f.name: f.type for f in actual}
    missing = [n for n in exp if n not in act]
    extra = [n for n in act if n not in exp and not n.startswith(("credit_", "task_"))]
    wrong = [f"{n}: {act[n]} (expected {exp[n]})" for n in exp if n in act and act[n] != exp[n]]
    parts = []
    if missing:
        parts.append("missing columns " + ", ".join(missing))
    if extra:
        parts.append("unexpected columns " + ", ".join(extra))
    if wrong:
        parts.append("wrong types " + "; ".join(wrong))
    return "; ".join(parts) or None
