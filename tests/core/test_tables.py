"""Episodes → Arrow → Parquet shard → Arrow → Episodes is lossless, for 1..4 agents."""

from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmca_data.envs.base import EnvSpec
from llmca_data.rollout import Episode
from llmca_data.schema import steps_schema
from llmca_data.shards import read_shard, sha256_file, write_shard
from llmca_data.tables import episodes_to_tables, tables_to_episodes


def make_spec(n: int, d: int, s: int, a: int) -> EnvSpec:
    return EnvSpec(
        env_id="lbf-5x5-1p-1f",
        n_agents=n,
        n_actions=a,
        obs_dim=d,
        state_dim=s,
        max_steps=20,
        action_names=tuple(f"a{i}" for i in range(a)),
        obs_features=tuple(f"o{i}" for i in range(d)),
        state_features=tuple(f"s{i}" for i in range(s)),
    )


def random_episode(rng: np.random.Generator, spec: EnvSpec, seed: int) -> Episode:
    t, n, d, s, a = int(rng.integers(1, 20)), spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions
    end = rng.random() < 0.5
    term, trunc = np.zeros(t, bool), np.zeros(t, bool)
    (term if end else trunc)[-1] = True
    return Episode(
        env_id=spec.env_id,
        seed=seed,
        policy_id="x/eps=0.10",
        tier="medium",
        obs=rng.normal(size=(t, n, d)).astype(np.float32),
        state=rng.normal(size=(t, s)).astype(np.float32),
        action=rng.integers(0, a, (t, n)).astype(np.int16),
        action_mask=rng.random((t, n, a)) < 0.7,
        reward_env=rng.random((t, n)).astype(np.float32),
        cost=(rng.random((t, n)) < 0.1).astype(np.float32),
        terminated=term,
        truncated=trunc,
        final_obs=rng.normal(size=(n, d)).astype(np.float32),
        final_state=rng.normal(size=s).astype(np.float32),
        final_action_mask=rng.random((n, a)) < 0.7,
        success=bool(end),
        env_kwargs={"k": 1},
        versions={"numpy": "x"},
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 4),
    d=st.integers(1, 7),
    s=st.integers(1, 9),
    a=st.integers(2, 6),
    count=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_through_parquet(tmp_path: Path, n: int, d: int, s: int, a: int, count: int, seed: int) -> None:
    spec = make_spec(n, d, s, a)
    rng = np.random.default_rng(seed)
    episodes = [random_episode(rng, spec, seed=i) for i in range(count)]
    ids = list(range(100, 100 + count))
    steps, eps = episodes_to_tables(episodes, ids, spec)
    assert steps.schema.equals(steps_schema(spec), check_metadata=False)
    root = tmp_path / f"r{seed}-{n}-{d}"
    e1 = write_shard(root, "data/x/steps/medium-00000.parquet", steps)
    e2 = write_shard(root, "data/x/episodes/medium-00000.parquet", eps)
    assert e1.rows == sum(e.length for e in episodes) and e2.rows == count
    assert e1.sha256 == sha256_file(root / e1.path)
    back = tables_to_episodes(read_shard(root / e1.path), read_shard(root / e2.path), spec)
    assert len(back) == count
    for a_ep, b_ep in zip(episodes, back, strict=True):
        for name in ("obs", "state", "action", "action_mask", "reward_env", "cost", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(a_ep, name), getattr(b_ep, name), err_msg=name)
        for name in ("final_obs", "final_state", "final_action_mask"):
            np.testing.assert_array_equal(getattr(a_ep, name), getattr(b_ep, name), err_msg=name)
        assert (a_ep.seed, a_ep.policy_id, a_ep.success, a_ep.env_kwargs) == (
            b_ep.seed,
            b_ep.policy_id,
            b_ep.success,
            b_ep.env_kwargs,
        )
    # lists are never null and the team reward is the sum over agents
    assert all(steps.column(c).null_count == 0 for c in steps.column_names)
    np.testing.assert_allclose(
        steps.column("reward_team").to_numpy(), np.concatenate([e.reward_team for e in episodes]), rtol=1e-6
    )


def test_shards_use_zstd_and_page_checksums(tmp_path: Path) -> None:
    spec = make_spec(2, 3, 4, 5)
    steps, _ = episodes_to_tables([random_episode(np.random.default_rng(0), spec, 1)], [0], spec)
    entry = write_shard(tmp_path, "data/x/steps/expert-00000.parquet", steps)
    import pyarrow.parquet as pq

    meta = pq.read_metadata(tmp_path / entry.path)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert not list(tmp_path.rglob(".*tmp-*")), "temporary files must be renamed away"
    assert isinstance(read_shard(tmp_path / entry.path), pa.Table)


def test_reference_returns_cover_every_contract_env() -> None:
    from llmca_data.envs import CONTRACT_ENV_IDS
    from llmca_data.reference import normalized_score, reference_returns

    for env_id in CONTRACT_ENV_IDS:
        ref = reference_returns(env_id)
        assert ref is not None and ref["expert"] > ref["random"], env_id
        assert normalized_score(env_id, ref["random"]) == 0.0
        assert abs(normalized_score(env_id, ref["expert"]) - 100.0) < 1e-9
