"""`critic_eval` on a real collected dataset with hand-made credit columns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmca_data.annotation.evaluate import credit_tallies, critic_eval, critic_eval_pairs
from llmca_data.annotation.metrics import combine_tallies, score_credits
from llmca_data.collect import CollectConfig, collect
from llmca_data.dataset import Dataset
from llmca_data.errors import DatasetNotFoundError, LlmcaError, UnknownCriticError, UnknownEnvError, UnknownTierError
from llmca_data.layout import INFO_PATH, ShardName
from llmca_data.schema import from_fsl, fsl, to_fsl
from llmca_data.shards import Manifest, write_json_atomic, write_shard

ENV2, ENV3 = "lbf-8x8-2p-2f", "lbf-8x8-3p-2f"
COUNTS = [
    "steps",
    "nan_steps",
    "rewarded_steps",
    "sign_pairs",
    "top_steps",
    "reference_tie_steps",
    "critic_tie_steps",
    "spearman_steps",
    "constant_steps",
    "mae_steps",
    "unscaled_steps",
    "episode_pairs",
    "episodes",
    "episodes_covered",
]


def add_credit(table: pa.Table, column: str, values: np.ndarray) -> pa.Table:
    field = pa.field(column, fsl(pa.float32(), values.shape[1]), nullable=False)
    return table.append_column(field, to_fsl(values.astype(np.float32), pa.float32()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LBF envs (2 and 3 agents), two tiers of the first; `shapley` = reward_env, `uniform` = r/N.

    `uniform` is NaN on the first random episode of ENV2; `my_critic` (so spelled in
    meta/info.json) exists only in the expert shard of ENV2.
    """
    root = tmp_path_factory.mktemp("eval") / "ds"
    collect(root, CollectConfig(ENV2, "random", 6, seed=1))
    collect(root, CollectConfig(ENV2, "expert", 4, seed=2))
    collect(root, CollectConfig(ENV3, "expert", 3, seed=3))
    manifest = Manifest.load(root)
    for name in manifest.shards(kind="steps"):
        rel = str(name)
        table = pq.read_table(root / rel)
        n = table.schema.field("reward_env").type.list_size
        reward_env = from_fsl(table.column("reward_env"), (n,))  # [M, N]
        uniform = np.repeat(table.column("reward_team").to_numpy()[:, None] / n, n, axis=1)  # [M, N]
        if (name.env_id, name.tier) == (ENV2, "random"):
            ids = table.column("episode_id").to_numpy()
            uniform[ids == ids.min()] = np.nan
        table = add_credit(add_credit(table, "credit_shapley", reward_env), "credit_uniform", uniform)
        if (name.env_id, name.tier) == (ENV2, "expert"):
            table = add_credit(table, "credit_my_critic", reward_env[:, ::-1].copy())
        manifest.files[rel] = write_shard(root, rel, table)
    manifest.save(root)
    info = json.loads((root / INFO_PATH).read_text())
    info["critics"] = {"my_critic": {"type": "import"}}
    write_json_atomic(root / INFO_PATH, info)
    return root


def arrays(root: Path, env_id: str, tier: str, critic: str, reference: str) -> tuple[np.ndarray, ...]:
    """The same columns read directly, independently of `critic_eval`."""
    table = pq.read_table(root / f"data/{env_id}/steps/{tier}-00000.parquet")
    n = table.schema.field("action").type.list_size
    return (
        from_fsl(table.column(critic), (n,)),
        from_fsl(table.column(reference), (n,)),
        table.column("reward_team").to_numpy(),
        table.column("episode_id").to_numpy(),
    )


def test_rows_per_tier_env_and_overall(dataset: Path) -> None:
    rows = critic_eval(dataset, "uniform", "shapley")
    keys = [(r["env_id"], r["tier"]) for r in rows]
    assert keys == [(ENV2, "expert"), (ENV2, "random"), (ENV2, "all"), (ENV3, "expert"), (ENV3, "all"), ("all", "all")]
    json.dumps(rows, allow_nan=False)  # no NaN anywhere
    by_key = {(r["env_id"], r["tier"]): r for r in rows}
    for env_id, tier in [(ENV2, "expert"), (ENV2, "random"), (ENV3, "expert")]:
        expected = score_credits(*arrays(dataset, env_id, tier, "credit_uniform", "credit_shapley")).to_dict()
        assert by_key[env_id, tier] == {"env_id": env_id, "tier": tier, **expected}


def test_pooled_rows_add_up(dataset: Path) -> None:
    rows = critic_eval(dataset, "uniform", "shapley")
    by_key = {(r["env_id"], r["tier"]): r for r in rows}
    groups = {
        (ENV2, "all"): [by_key[ENV2, "expert"], by_key[ENV2, "random"]],
        (ENV3, "all"): [by_key[ENV3, "expert"]],
        ("all", "all"): [by_key[ENV2, "all"], by_key[ENV3, "all"]],
    }
    for key, parts in groups.items():
        for count in COUNTS:
            assert by_key[key][count] == sum(p[count] for p in parts), (key, count)
        pooled = sum(p["sign_agreement"] * p["sign_pairs"] for p in parts) / by_key[key]["sign_pairs"]
        assert by_key[key]["sign_agreement"] == pytest.approx(pooled)
        covered = sum(p["episodes_covered"] for p in parts) / by_key[key]["episodes"]
        assert by_key[key]["coverage"] == pytest.approx(covered)


def test_uniform_against_per_agent_rewards(dataset: Path) -> None:
    by_key = {(r["env_id"], r["tier"]): r for r in critic_eval(dataset, "uniform", "shapley")}
    random, total = by_key[ENV2, "random"], by_key["all", "all"]
    assert random["episodes"] == 6 and random["episodes_covered"] == 5 and random["coverage"] == pytest.approx(5 / 6)
    assert random["nan_steps"] > 0 and by_key[ENV2, "expert"]["nan_steps"] == 0
    # uniform credits are constant: every rewarded three-agent step is skipped by Spearman
    assert total["spearman"] is None and total["spearman_steps"] == 0
    assert total["constant_steps"] == by_key[ENV3, "all"]["rewarded_steps"] > 0
    # uniform credits are tied at the top on every step: never the reference's unique top
    assert total["critic_tie_steps"] == total["top_steps"] > 0 and total["top_agent_accuracy"] == 0.0
    # the sums agree (Σ reward_env = reward_team), so MAE is the unscaled mean |r/N − reward_env_i|
    c, r, rew, _ = arrays(dataset, ENV3, "expert", "credit_uniform", "credit_shapley")
    on = np.abs(rew) > 1e-6
    mae = np.abs(c[on].astype(np.float64) - r[on]).mean(axis=1).mean()
    assert by_key[ENV3, "expert"]["mae_scaled"] == pytest.approx(mae, rel=1e-5)


def test_reference_against_itself_is_perfect(dataset: Path) -> None:
    total = critic_eval(dataset, "shapley", "shapley")[-1]
    assert (total["sign_agreement"], total["top_agent_accuracy"], total["mae_scaled"]) == (1.0, 1.0, 0.0)
    assert total["coverage"] == 1.0 and total["episode_total_pearson"] == pytest.approx(1.0)


def test_filters(dataset: Path) -> None:
    rows = critic_eval(dataset, "uniform", "shapley", envs=[ENV2], tiers=["random"])
    assert [(r["env_id"], r["tier"]) for r in rows] == [(ENV2, "random"), (ENV2, "all"), ("all", "all")]
    assert rows[0]["steps"] == rows[1]["steps"] == rows[2]["steps"]
    assert critic_eval(dataset, "uniform", "shapley", tiers=["medium"]) == []
    with pytest.raises(UnknownEnvError, match=ENV2):
        critic_eval(dataset, "uniform", "shapley", envs=["lbf-9x9-2p-2f"])
    with pytest.raises(UnknownTierError):
        critic_eval(dataset, "uniform", "shapley", tiers=["expertt"])


def test_column_missing_from_some_shards_counts_as_nan(dataset: Path) -> None:
    by_key = {(r["env_id"], r["tier"]): r for r in critic_eval(dataset, "my_critic", "shapley")}
    assert by_key[ENV2, "expert"]["coverage"] == 1.0 and by_key[ENV2, "expert"]["top_agent_accuracy"] == 0.0
    for key in [(ENV2, "random"), (ENV3, "expert")]:
        assert by_key[key]["nan_steps"] == by_key[key]["steps"] and by_key[key]["coverage"] == 0.0
    as_reference = critic_eval(dataset, "shapley", "my_critic", envs=[ENV2])[1]
    assert as_reference["tier"] == "random"
    assert as_reference["nan_steps"] == as_reference["steps"] and as_reference["coverage"] == 1.0  # critic only


def test_unknown_critic_lists_the_present_ones(dataset: Path) -> None:
    with pytest.raises(UnknownCriticError) as err:
        critic_eval(dataset, "llm-mca", "shapley")
    assert isinstance(err.value, LlmcaError) and isinstance(err.value, ValueError)
    msg = str(err.value)
    assert "credit_llm_mca" in msg and "critics present: my_critic, shapley, uniform" in msg
    assert f"llmca annotate {dataset} --critic llm-mca" in msg
    with pytest.raises(UnknownCriticError, match="counterfactual-h5"):
        critic_eval(dataset, "shapley", "counterfactual-h5")
    with pytest.raises(UnknownCriticError, match="my_critic"):  # only in ENV2's expert shard
        critic_eval(dataset, "my_critic", "shapley", envs=[ENV3])


def test_tallies_of_separate_datasets_pool_like_their_concatenated_steps(dataset: Path) -> None:
    """How benchmarks pool seeds: one tally per run, combined, equals scoring all runs' steps at once."""
    parts = [(ENV2, "expert"), (ENV2, "random")]  # stand-ins for two runs' datasets of one env
    tallies = [credit_tallies(dataset, "uniform", "shapley", envs=[e], tiers=[t])[e, t] for e, t in parts]
    cols = [arrays(dataset, env, tier, "credit_uniform", "credit_shapley") for env, tier in parts]
    crit, ref, rew, ep = (np.concatenate(c) for c in zip(*cols, strict=True))
    ep = ep + np.repeat([0, 1_000_000], [len(cols[0][3]), len(cols[1][3])])  # episode ids unique per run
    pooled = combine_tallies(tallies).scores().to_dict()
    assert pooled == pytest.approx(score_credits(crit, ref, rew, ep).to_dict(), nan_ok=True)
    assert list(credit_tallies(dataset, "uniform", "shapley")) == [(ENV2, "expert"), (ENV2, "random"), (ENV3, "expert")]


def test_no_dataset_is_an_error_that_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for root in (tmp_path, missing):  # an empty directory, and a path that does not exist
        with pytest.raises(DatasetNotFoundError, match=f"no dataset at {root}.*llmca collect") as err:
            critic_eval(root, "uniform", "shapley")
        assert isinstance(err.value, LlmcaError) and isinstance(err.value, FileNotFoundError)
        with pytest.raises(DatasetNotFoundError):
            credit_tallies(root, "uniform", "shapley")
    assert not missing.exists() and list(tmp_path.iterdir()) == []


def test_no_matching_shard_gives_no_rows(dataset: Path) -> None:
    assert critic_eval(dataset, "uniform", "shapley", tiers=["medium"]) == []
    assert credit_tallies(dataset, "uniform", "shapley", envs=[ENV3], tiers=["random"]) == {}


def test_pairs_are_scored_from_one_read_of_each_shard(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    original = Dataset.read

    def counting(self: Dataset, name: ShardName, columns: Sequence[str] | None = None) -> pa.Table:
        reads.append(str(name))
        return original(self, name, columns)

    expected = {pair: critic_eval(dataset, *pair) for pair in [("uniform", "shapley"), ("shapley", "uniform")]}
    monkeypatch.setattr(Dataset, "read", counting)
    assert critic_eval_pairs(dataset, list(expected) * 2) == expected
    assert sorted(reads) == sorted(str(n) for n in Manifest.load(dataset).shards(kind="steps"))
