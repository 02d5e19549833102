"""The core dataset API: what is committed, one read per shard for several consumers, and the writers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from llmca_data.build import build
from llmca_data.dataset import Dataset, EpisodeCredits, renumber_episodes, require_dataset, set_critic_columns, writing
from llmca_data.envs.base import EnvSpec
from llmca_data.errors import DatasetNotFoundError, LlmcaError, ShardError
from llmca_data.info import load_info, spec_from_info
from llmca_data.layout import ShardName
from llmca_data.schema import (
    CREDIT,
    TASK,
    annotations_schema,
    credit_column,
    critic_column_kind,
    critic_field,
    critic_of_column,
    from_fsl,
    fsl,
    task_column,
)
from llmca_data.stats import tier_stats
from llmca_data.validate import validate

ENV = "lbf-8x8-2p-2f"
RANDOM_STEPS = ShardName(ENV, "steps", "random", 0)


class Recorder:
    """A visitor that keeps what it was given."""

    def __init__(self, kind: str, columns: Sequence[str] | None) -> None:
        self.kind, self.wanted = kind, columns
        self.seen: dict[str, list[str]] = {}

    def columns(self, name: ShardName, schema: pa.Schema) -> Sequence[str] | None:
        return self.wanted if name.kind == self.kind else ()

    def visit(self, name: ShardName, table: pa.Table) -> None:
        self.seen[str(name)] = table.column_names


Reads = list[tuple[str, tuple[str, ...] | None]]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """Every ``Dataset.read`` call: (shard, columns)."""
    calls: Reads = []
    original = Dataset.read

    def counting(self: Dataset, name: ShardName, columns: Sequence[str] | None = None) -> pa.Table:
        calls.append((str(name), None if columns is None else tuple(columns)))
        return original(self, name, columns)

    monkeypatch.setattr(Dataset, "read", counting)
    return calls


def test_column_names_types_and_their_inverse_live_in_schema() -> None:
    assert credit_column("counterfactual-h5") == "credit_counterfactual_h5"
    assert task_column("llm-taca") == "task_llm_taca"
    assert critic_of_column("credit_counterfactual_h5") == "counterfactual-h5"
    assert critic_of_column("task_llm_taca") == "llm-taca"
    assert critic_of_column("credit_my_critic", {"credit_my_critic": "my_critic"}) == "my_critic"
    assert critic_column_kind("credit_x") is CREDIT and critic_column_kind("task_x") is TASK
    assert critic_column_kind("reward_env") is None
    assert critic_field("credit_x", 3).type == fsl(pa.float32(), 3)
    assert critic_field("task_x", 3).type == fsl(pa.int16(), 3)
    assert not critic_field("task_x", 3).nullable
    with pytest.raises(ValueError, match="not a critic column"):
        critic_of_column("reward_env")


def test_no_dataset_raises_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for root, why in [
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path / "file", "is a file"),
        (tmp_path, "no meta"),
    ]:
        with pytest.raises(DatasetNotFoundError, match=why) as err:
            require_dataset(root)
        assert isinstance(err.value, LlmcaError) and isinstance(err.value, FileNotFoundError)
        assert f"llmca collect ENV --tier TIER --episodes N --out {root}" in str(err.value)
        with pytest.raises(DatasetNotFoundError), writing(root, create=False):
            pass
        with pytest.raises(DatasetNotFoundError):
            build(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_what_is_committed(lbf_dataset: Path) -> None:
    ds = Dataset.open(lbf_dataset)
    assert ds.envs() == [ENV]
    assert ds.episode_ids(ENV, "random").tolist() == list(range(12))
    assert ds.episode_ids(ENV, "expert").tolist() == list(range(12, 20))
    assert ds.next_episode_id() == 20
    assert ds.critics() == {} and ds.critic_fields() == {}


def test_scan_reads_each_shard_once_for_several_visitors(lbf_dataset: Path, reads: Reads) -> None:
    ds = Dataset(lbf_dataset)
    steps_a, steps_b = Recorder("steps", ["episode_id", "t"]), Recorder("steps", ["reward_team", "credit_none"])
    everything = Recorder("episodes", None)
    ds.scan([steps_a, steps_b, everything])
    assert sorted(name for name, _ in reads) == sorted(str(n) for n in ds.shards())
    assert dict(reads)[str(RANDOM_STEPS)] == ("episode_id", "t", "reward_team")  # absent columns left out
    assert steps_a.seen[str(RANDOM_STEPS)] == ["episode_id", "t"]
    assert steps_b.seen[str(RANDOM_STEPS)] == ["reward_team"]
    assert len(everything.seen[f"data/{ENV}/episodes/random-00000.parquet"]) == 15  # None: every column
    assert set(steps_a.seen) == {str(n) for n in ds.shards(kind="steps")}


def test_scan_hands_unreadable_shards_to_on_error(lbf_dataset: Path) -> None:
    (lbf_dataset / str(RANDOM_STEPS)).write_bytes(b"not parquet")
    ds, visitor = Dataset(lbf_dataset), Recorder("steps", None)
    with pytest.raises(ShardError, match="random-00000"):
        ds.scan([visitor])
    failed: list[ShardName] = []
    ds.scan([visitor], on_error=lambda name, exc: failed.append(name))
    assert failed == [RANDOM_STEPS] and list(visitor.seen) == [f"data/{ENV}/steps/expert-00000.parquet"]


def test_validate_and_statistics_read_each_shard_once(lbf_dataset: Path, reads: Reads) -> None:
    assert validate(lbf_dataset).ok
    assert sorted(name for name, _ in reads) == sorted(str(n) for n in Dataset(lbf_dataset).shards())
    reads.clear()
    rows = tier_stats(lbf_dataset)
    assert [r["tier"] for r in rows] == ["expert", "random"] and [r["episodes"] for r in rows] == [8, 12]
    assert sorted(name for name, _ in reads) == [f"data/{ENV}/episodes/{t}-00000.parquet" for t in ("expert", "random")]
    reads.clear()
    build(lbf_dataset)
    assert sorted(name for name, _ in reads) == sorted(str(n) for n in Dataset(lbf_dataset).shards())


def test_set_critic_columns_keeps_other_episodes_and_fills_the_missing(lbf_dataset: Path) -> None:
    steps = Dataset(lbf_dataset).read(RANDOM_STEPS)
    ids = steps.column("episode_id").to_numpy()
    length = int((ids == 3).sum())
    first = set_critic_columns(steps, "my-critic", 2, [EpisodeCredits(3, np.ones((length, 2), np.float32))])
    assert "task_my_critic" not in first.column_names  # no result has tasks
    tasks = np.full((length, 2), 7, np.int16)
    second = set_critic_columns(first, "my-critic", 2, [EpisodeCredits(4, np.zeros(((ids == 4).sum(), 2)), None)])
    second = set_critic_columns(second, "my-critic", 2, [EpisodeCredits(3, np.full((length, 2), 2.0), tasks)])
    credits = from_fsl(second.column("credit_my_critic"), (2,))
    assert np.all(credits[ids == 3] == 2.0) and np.all(credits[ids == 4] == 0.0)
    assert np.isnan(credits[(ids != 3) & (ids != 4)]).all()
    task = from_fsl(second.column("task_my_critic"), (2,))
    assert np.all(task[ids == 3] == 7) and np.all(task[ids != 3] == -1)
    assert second.schema.field("credit_my_critic") == critic_field("credit_my_critic", 2)
    with pytest.raises(ValueError, match="my-critic: credits of shape"):
        set_critic_columns(steps, "my-critic", 2, [EpisodeCredits(3, np.ones((length + 1, 2)))])


def test_writer_stages_until_commit_and_pads_critic_columns(lbf_dataset: Path) -> None:
    with writing(lbf_dataset) as ds:
        steps = ds.read(RANDOM_STEPS)
        ids = steps.column("episode_id").to_numpy()
        results = [EpisodeCredits(int(e), np.ones(((ids == e).sum(), 2), np.float32)) for e in np.unique(ids)]
        rows = _annotation_rows(lbf_dataset, [r.episode_id for r in results], "my-critic")
        ds.write_critic(RANDOM_STEPS, steps, "my-critic", 2, results, rows)
        ds.record_critic("my-critic", {"type": "test"})
        assert "credit_my_critic" not in Dataset(lbf_dataset).critic_fields()  # staged, not committed
        ds.commit()
        assert Dataset(lbf_dataset).critics() == {"credit_my_critic": "my-critic"}
        assert load_info(lbf_dataset)["critics"]["my-critic"]["column"] == "credit_my_critic"
        assert ds.pad_critic_columns() == [f"data/{ENV}/steps/expert-00000.parquet"]
        ds.commit()
    padded = Dataset(lbf_dataset).read(ShardName(ENV, "steps", "expert", 0), ["credit_my_critic"])
    assert np.isnan(from_fsl(padded.column("credit_my_critic"), (2,))).all()
    assert validate(lbf_dataset).ok


def test_append_episodes_splits_at_episode_boundaries(lbf_dataset: Path) -> None:
    source = Dataset(lbf_dataset)
    steps, eps = source.read(RANDOM_STEPS), source.read(ShardName(ENV, "episodes", "random", 0))
    with writing(lbf_dataset) as ds:
        steps, eps = renumber_episodes(steps, eps, ds.next_episode_id())
        files = ds.append_episodes(_spec(lbf_dataset), "random", steps, eps, max_shard_bytes=20_000)
        ds.commit()
    assert len(files) > 2 and files[:2] == [f"data/{ENV}/{k}/random-00001.parquet" for k in ("steps", "episodes")]
    assert Dataset(lbf_dataset).episode_ids(ENV, "random").tolist() == list(range(12)) + list(range(20, 32))
    assert validate(lbf_dataset).ok


def _spec(root: Path) -> EnvSpec:
    return spec_from_info(load_info(root)["envs"][ENV])


def _annotation_rows(root: Path, episode_ids: list[int], critic_id: str) -> pa.Table:
    schema, n = annotations_schema(_spec(root)), len(episode_ids)
    data: dict[str, list[object]] = {f.name: [""] * n for f in schema}
    data.update(episode_id=list(episode_ids), critic=[critic_id] * n, status=["ok"] * n, rationale=[["", ""]] * n)
    data.update({k: [0] * n for k in ("tokens_in", "tokens_out", "latency_s", "cost_usd")})
    return pa.table(data, schema=schema)
