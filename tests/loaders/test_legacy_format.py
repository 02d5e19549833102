"""A dataset in the on-disk format of llmca-data 0.1.0 (schema_version 1), written with plain pyarrow.

The factory below does not use the package's schema, shard or dataset code: it spells the
format as the 0.1.0 writers produced it (zstd Parquet with page checksums, ``llmca`` schema
metadata, ``episode_id`` nullable after collection's renumbering, ``meta/info.json`` and
``meta/manifest.json`` as plain JSON). Such a dataset must load, validate and take new
annotations.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.evaluate import critic_eval
from llmca_data.annotation.registry import make_critic
from llmca_data.loaders import OfflineDataset
from llmca_data.validate import validate

ENV = "lbf-8x8-2p-2f"
N, A, OBS, STATE = 2, 6, 12, 15
LENGTHS = [3, 4, 2]  # episodes 0 and 2 terminate, episode 1 is truncated
STEPS = f"data/{ENV}/steps/random-00000.parquet"
ANNOTATIONS = f"data/{ENV}/annotations/random-00000.parquet"


def _fsl(value: pa.DataType, *shape: int) -> pa.DataType:
    for size in reversed(shape):
        value = pa.list_(value, size)
    return value


def _column(values: np.ndarray, value: pa.DataType) -> pa.Array:
    arr = pa.array(values.reshape(-1), type=value)
    for size in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return arr


Columns = dict[str, tuple[pa.DataType, pa.Array | list[object]]]


def _write(root: Path, rel: str, kind: str, columns: Columns) -> dict[str, object]:
    nullable = {"episode_id"} if kind in ("steps", "episodes") else set()
    fields = [pa.field(name, t, nullable=name in nullable) for name, (t, _) in columns.items()]
    meta = {"schema_version": 1, "package_version": "0.1.0", "env_id": ENV, "kind": kind}
    schema = pa.schema(fields, metadata={b"llmca": json.dumps(meta).encode()})
    table = pa.table({name: v for name, (_, v) in columns.items()}, schema=schema)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", row_group_size=50_000, write_page_checksum=True)
    data = path.read_bytes()
    return {"path": rel, "rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_legacy_dataset(root: Path) -> None:
    """Three random-tier episodes of LBF with Shapley credits, LLM-TACA tasks and Shapley annotation rows."""
    rng = np.random.default_rng(0)
    m, e = sum(LENGTHS), len(LENGTHS)
    ids = np.repeat(np.arange(e, dtype=np.int64), LENGTHS)
    t = np.concatenate([np.arange(n, dtype=np.int32) for n in LENGTHS])
    last = np.cumsum(LENGTHS) - 1
    terminated, truncated = np.zeros(m, bool), np.zeros(m, bool)
    terminated[last[[0, 2]]], truncated[last[1]] = True, True
    reward_env = (rng.random((m, N)) < 0.3).astype(np.float32) * 0.25
    obs = rng.random((m, N, OBS), dtype=np.float32)
    state = rng.random((m, STATE), dtype=np.float32)
    mask = np.ones((m, N, A), bool)
    f32, i16 = pa.float32(), pa.int16()
    steps = {
        "episode_id": (pa.int64(), pa.array(ids)),
        "t": (pa.int32(), pa.array(t)),
        "obs": (_fsl(f32, N, OBS), _column(obs, f32)),
        "state": (_fsl(f32, STATE), _column(state, f32)),
        "action": (_fsl(i16, N), _column(rng.integers(0, A, (m, N)).astype(np.int16), i16)),
        "action_mask": (_fsl(pa.bool_(), N, A), _column(mask, pa.bool_())),
        "reward_team": (f32, pa.array(reward_env.sum(axis=1))),
        "reward_env": (_fsl(f32, N), _column(reward_env, f32)),
        "cost": (_fsl(f32, N), _column(np.zeros((m, N), np.float32), f32)),
        "terminated": (pa.bool_(), pa.array(terminated)),
        "truncated": (pa.bool_(), pa.array(truncated)),
        "credit_shapley": (_fsl(f32, N), _column(reward_env, f32)),
        "task_llm_taca": (_fsl(i16, N), _column(rng.integers(-1, 2, (m, N)).astype(np.int16), i16)),
    }
    returns = np.add.reduceat(reward_env, np.r_[0, np.cumsum(LENGTHS)[:-1]])  # [E, N]
    episodes = {
        "episode_id": (pa.int64(), pa.array(np.arange(e, dtype=np.int64))),
        "tier": (pa.string(), ["random"] * e),
        "env_id": (pa.string(), [ENV] * e),
        "seed": (pa.int64(), [11, 12, 13]),
        "env_kwargs": (pa.string(), ["{}"] * e),
        "versions": (pa.string(), [json.dumps({"llmca-data": "0.1.0"})] * e),
        "policy_id": (pa.string(), ["random"] * e),
        "length": (pa.int32(), pa.array(np.array(LENGTHS, np.int32))),
        "return_team": (f32, pa.array(returns.sum(axis=1))),
        "return_env": (_fsl(f32, N), _column(returns, f32)),
        "cost_total": (_fsl(f32, N), _column(np.zeros((e, N), np.float32), f32)),
        "success": (pa.bool_(), [True, False, True]),
        "final_obs": (_fsl(f32, N, OBS), _column(rng.random((e, N, OBS), dtype=np.float32), f32)),
        "final_state": (_fsl(f32, STATE), _column(rng.random((e, STATE), dtype=np.float32), f32)),
        "final_action_mask": (_fsl(pa.bool_(), N, A), _column(np.ones((e, N, A), bool), pa.bool_())),
    }
    s = pa.string()
    annotations = {
        "episode_id": (pa.int64(), list(range(e))),
        "critic": (s, ["shapley"] * e),
        "model": (s, [""] * e),
        "prompt_version": (s, [""] * e),
        "params": (s, [json.dumps({"samples": 256, "seed": 0, "type": "shapley"})] * e),
        "status": (s, ["ok"] * e),
        "error": (s, [""] * e),
        "rationale": (_fsl(s, N), [[""] * N] * e),
        "summary": (s, [""] * e),
        "tokens_in": (pa.int64(), [0] * e),
        "tokens_out": (pa.int64(), [0] * e),
        "latency_s": (f32, [0.0] * e),
        "cost_usd": (f32, [0.0] * e),
        "raw_response": (s, [""] * e),
    }
    files = [
        _write(root, ANNOTATIONS, "annotations", annotations),
        _write(root, f"data/{ENV}/episodes/random-00000.parquet", "episodes", episodes),
        _write(root, STEPS, "steps", steps),
    ]
    food = [f"food_slot_{k}.{x}" for k in range(2) for x in ("row", "col", "level")]
    spec = {
        "action_names": ["NONE", "NORTH", "SOUTH", "WEST", "EAST", "LOAD"],
        "agent_ids": ["agent_0", "agent_1"],
        "env_id": ENV,
        "kwargs": {},
        "max_steps": 50,
        "n_actions": A,
        "n_agents": N,
        "noop_action": 0,
        "obs_dim": OBS,
        "obs_features": [*food, "self.row", "self.col", "self.level", "other_0.row", "other_0.col", "other_0.level"],
        "state_dim": STATE,
        "state_features": [f"agent_{i}.{x}" for i in range(2) for x in ("row", "col", "level")]
        + [f"food_{k}.{x}" for k in range(2) for x in ("row", "col", "level", "present")]
        + ["t_frac"],
    }
    tier = {"description": "uniformly random legal actions", "epsilon": 1.0, "family_epsilon": {}, "name": "random"}
    info = {
        "critics": {
            "llm-taca": {"column": "credit_llm_taca", "package_version": "0.1.0", "params": {"type": "llm"}},
            "shapley": {"column": "credit_shapley", "package_version": "0.1.0", "params": {"type": "shapley"}},
        },
        "envs": {
            ENV: {
                "reference_returns": {"episodes": 200, "expert": 1.0, "random": 0.2409, "version": 1},
                "spec": spec,
                "tiers": {"random": {**tier, "policy_ids": ["random"]}},
            }
        },
        "package_version": "0.1.0",
        "schema_version": 1,
        "versions": {"llmca-data": "0.1.0", "numpy": "2.0.0"},
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    manifest = {"files": files, "package_version": "0.1.0", "schema_version": 1, "written_at": "2026-12-01T00:00:00Z"}
    (root / "meta/manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    root = tmp_path / "legacy"
    write_legacy_dataset(root)
    return root


def test_a_legacy_dataset_validates(legacy: Path) -> None:
    report = validate(legacy)
    assert report.ok, report.problems
    assert report.files == 3 and report.rows == sum(LENGTHS) + 2 * len(LENGTHS)


def test_a_legacy_dataset_loads(legacy: Path) -> None:
    ds = OfflineDataset.open(legacy, ENV)
    assert ds.critics == ("shapley",) and ds.task_columns == ("task_llm_taca",)
    data = ds.transitions(reward="shapley", tasks="llm-taca")
    assert data["obs"].shape == (sum(LENGTHS), N, OBS) and data["task"].shape == (sum(LENGTHS), N)
    table = pq.read_table(legacy / STEPS)
    expected = table.column("reward_env").combine_chunks().flatten().to_numpy().reshape(-1, N)
    assert np.array_equal(data["reward"].numpy(), expected)


def test_a_legacy_dataset_takes_new_annotations(legacy: Path) -> None:
    before = pq.read_table(legacy / STEPS)
    result = annotate(legacy, make_critic("uniform"))
    assert result.episodes == len(LENGTHS) and result.failed == 0
    after = pq.read_table(legacy / STEPS)
    assert after.column_names == [*before.column_names, "credit_uniform"]
    for name in before.column_names:  # what was there is kept, type and values
        assert after.schema.field(name).type == before.schema.field(name).type
        assert after.column(name).equals(before.column(name))
    rows = pq.read_table(legacy / ANNOTATIONS).select(["episode_id", "critic"]).to_pylist()
    assert sorted((r["episode_id"], r["critic"]) for r in rows) == [
        (e, c) for e in range(len(LENGTHS)) for c in ("shapley", "uniform")
    ]
    info = json.loads((legacy / "meta/info.json").read_text())
    assert set(info["critics"]) == {"llm-taca", "shapley", "uniform"}
    assert validate(legacy).ok
    assert OfflineDataset.open(legacy, ENV).critics == ("shapley", "uniform")
    assert critic_eval(legacy, "uniform", "shapley")[-1]["coverage"] == 1.0
