"""OfflineDataset against a hand-built expectation on a real, Shapley-annotated LBF dataset."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.config import ConfigError
from llmca_data.errors import (
    LlmcaError,
    SchemaVersionError,
    ShardError,
    UnknownCriticError,
    UnknownEnvError,
    UnknownTierError,
)
from llmca_data.info import load_info, spec_from_info
from llmca_data.loaders import OfflineDataset, normalize_credits, rescale_credits, sample_batch
from llmca_data.loaders.offline import LoaderError, MissingExtraError
from llmca_data.schema import to_fsl
from llmca_data.shards import Manifest, write_shard

torch.set_num_threads(1)

ENV = "lbf-8x8-2p-2f"
RANDOM_STEPS = f"data/{ENV}/steps/random-00000.parquet"
KEYS = {"obs", "action", "reward", "next_obs", "action_mask", "next_action_mask", "state", "next_state"}
KEYS |= {"terminated", "truncated", "cost", "episode_id", "t"}


@pytest.fixture(scope="module")
def annotated_master(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("offline") / "ds"
    shutil.copytree(lbf_dataset_master, root)
    annotate(root, make_critic("shapley"))
    return root


@pytest.fixture
def annotated(annotated_master: Path, tmp_path: Path) -> Path:
    """A private copy a test may damage."""
    dest = tmp_path / "ds"
    shutil.copytree(annotated_master, dest)
    return dest


@pytest.fixture(scope="module")
def ds(annotated_master: Path) -> OfflineDataset:
    return OfflineDataset.open(annotated_master, ENV)


def expected_transitions(root: Path, tiers: tuple[str, ...], reward: str) -> dict[str, np.ndarray]:
    """The contract spelled out row by row: one Python loop over episodes and steps."""
    manifest = Manifest.load(root)
    out: dict[str, list[Any]] = {k: [] for k in KEYS}
    for tier in tiers:
        rows = [r for n in manifest.shards(ENV, "steps", tier) for r in pq.read_table(root / str(n)).to_pylist()]
        finals = {
            e["episode_id"]: e
            for n in manifest.shards(ENV, "episodes", tier)
            for e in pq.read_table(root / str(n)).to_pylist()
        }
        for episode_id in dict.fromkeys(r["episode_id"] for r in rows):
            steps = [r for r in rows if r["episode_id"] == episode_id]
            for i, row in enumerate(steps):
                after = steps[i + 1] if i + 1 < len(steps) else None
                final = finals[episode_id]
                n = len(row["action"])
                r = {"team": [row["reward_team"]] * n, "env": row["reward_env"]}.get(reward) or row[reward]
                for key in ("obs", "action", "action_mask", "state", "terminated", "truncated", "cost", "t"):
                    out[key].append(row[key])
                out["episode_id"].append(episode_id)
                out["reward"].append(r)
                out["next_obs"].append(after["obs"] if after else final["final_obs"])
                out["next_state"].append(after["state"] if after else final["final_state"])
                out["next_action_mask"].append(after["action_mask"] if after else final["final_action_mask"])
    return {k: np.array(v) for k, v in out.items()}


def rewrite_credits(root: Path, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Replace the random shard's ``credit_shapley`` by ``fn(credits [M, N], episode_id [M])``, manifest too."""
    table = pq.read_table(root / RANDOM_STEPS)
    credits = np.array(table.column("credit_shapley").to_pylist(), np.float32)
    new = fn(credits, table.column("episode_id").to_numpy())
    i = table.schema.get_field_index("credit_shapley")
    table = table.set_column(i, table.schema.field(i), to_fsl(new.astype(np.float32), pa.float32()))
    manifest = Manifest.load(root)
    manifest.files[RANDOM_STEPS] = write_shard(root, RANDOM_STEPS, table)
    manifest.save(root)


def test_open_metadata_and_frames(ds: OfflineDataset, annotated_master: Path) -> None:
    assert ds.tiers == ("expert", "random")
    assert ds.critics == ("shapley",)
    assert ds.rewards == ("team", "env", "credit_shapley")
    assert ds.spec == spec_from_info(load_info(annotated_master)["envs"][ENV])
    assert ds.make_env().spec == ds.spec
    episodes = ds.episodes()
    assert episodes.height == 20 and set(episodes["tier"]) == {"expert", "random"}
    steps = ds.steps()
    assert isinstance(steps, pl.DataFrame) and steps.height == int(episodes["length"].sum())
    assert steps["obs"].to_numpy().shape == (steps.height, 2, ds.spec.obs_dim)
    lazy = ds.steps(["episode_id", "t"], lazy=True)
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.filter(pl.col("t") == 0).collect().height == 20
    only = OfflineDataset.open(annotated_master, ENV, tiers="expert")
    assert only.tiers == ("expert",) and only.episodes().height == 8
    with pytest.raises(LoaderError, match="reward_team"):
        ds.steps(["nope"])


@pytest.mark.parametrize("reward", ["team", "env", "credit_shapley"])
def test_transitions_match_hand_built(ds: OfflineDataset, annotated_master: Path, reward: str) -> None:
    got = ds.transitions(reward=reward)
    want = expected_transitions(annotated_master, ds.tiers, reward)
    assert set(got) == KEYS
    m, n = len(want["t"]), ds.spec.n_agents
    assert got["obs"].shape == (m, n, ds.spec.obs_dim) and got["reward"].shape == (m, n)
    assert got["action"].dtype == torch.int64 and got["terminated"].dtype == torch.bool
    for key in KEYS:
        np.testing.assert_array_equal(got[key].numpy(), want[key].astype(got[key].numpy().dtype), err_msg=key)
    assert ds.last_dropped_episodes == 0


def test_reward_kinds_and_episode_ends(ds: OfflineDataset) -> None:
    team, env, credit = (ds.transitions(reward=r) for r in ("team", "env", "shapley"))  # a bare critic id works
    assert torch.equal(team["reward"][:, 0], team["reward"][:, 1])  # broadcast
    assert torch.allclose(env["reward"].sum(1), team["reward"][:, 0])
    assert torch.allclose(credit["reward"].sum(1), team["reward"][:, 0], atol=1e-5)  # Shapley efficiency
    assert not torch.equal(env["reward"], team["reward"])
    ends = team["terminated"] | team["truncated"]
    finals = ds.episodes()
    by_id = {int(e): i for i, e in enumerate(finals["episode_id"])}
    rows = [by_id[int(e)] for e in team["episode_id"][ends]]
    final_obs = torch.from_numpy(finals["final_obs"].to_numpy()[rows])
    assert torch.equal(team["next_obs"][ends], final_obs)
    assert torch.equal(team["next_obs"][~ends], team["obs"][1:][~ends[:-1]])


def test_nan_credits_drop_whole_episodes(annotated: Path, caplog: pytest.LogCaptureFixture) -> None:
    victim: list[int] = []

    def poison(c: np.ndarray, ep: np.ndarray) -> np.ndarray:
        victim.append(int(ep[ep != ep[0]][0]))  # the second episode
        c[np.flatnonzero(ep == victim[0])[3], 1] = np.nan  # one agent, one step
        return c

    rewrite_credits(annotated, poison)
    ds = OfflineDataset.open(annotated, ENV)
    full = ds.transitions("team")
    assert ds.last_dropped_episodes == 0
    with caplog.at_level(logging.WARNING):
        got = ds.transitions("credit_shapley")
    assert ds.last_dropped_episodes == 1 and "dropped 1 episodes" in caplog.text
    lost = int((full["episode_id"] == victim[0]).sum())
    assert got["t"].shape[0] == full["t"].shape[0] - lost and victim[0] not in got["episode_id"].tolist()
    assert not torch.isnan(got["reward"]).any()
    seq = ds.sequences(10, reward="credit_shapley")
    assert int(seq["mask"].sum()) == got["t"].shape[0] and ds.last_dropped_episodes == 1


def test_tier_without_the_critic_is_dropped(lbf_dataset: Path) -> None:
    annotate(lbf_dataset, make_critic("shapley"), tiers=("expert",))
    ds = OfflineDataset.open(lbf_dataset, ENV)
    assert ds.critics == ("shapley",)
    assert ds.steps(["credit_shapley"])["credit_shapley"].null_count() > 0  # random shard lacks the column
    got = ds.transitions("credit_shapley")
    expert = ds.episodes().filter(pl.col("tier") == "expert")
    assert ds.last_dropped_episodes == 12 and got["t"].shape[0] == int(expert["length"].sum())
    assert set(got["episode_id"].tolist()) == set(expert["episode_id"].to_list())


def test_credit_scale_step(annotated: Path) -> None:
    rewrite_credits(annotated, lambda c, ep: np.where(np.arange(len(c))[:, None] % 5 == 0, 0.0, 3.0 * c + 0.25))
    ds = OfflineDataset.open(annotated, ENV)
    team = ds.transitions("team")["reward"][:, 0]  # [M]
    raw = ds.transitions("credit_shapley")["reward"]
    assert torch.equal(ds.transitions("credit_shapley", credit_scale="none")["reward"], raw)  # the default
    got = ds.transitions("credit_shapley", credit_scale="step")["reward"]
    assert not torch.allclose(raw.sum(1), team)
    assert torch.allclose(got.sum(1), team, atol=1e-5)
    zero = raw.sum(1).abs() <= 1e-6
    assert zero.any() and torch.equal(got[zero], (team[zero] / 2)[:, None].expand(-1, 2))
    scaled = ~zero & (raw != 0).all(1)
    ratio = got[scaled] / raw[scaled]
    assert torch.allclose(ratio[:, 0], ratio[:, 1], rtol=1e-4)  # a rescale, not a redistribution
    uniform = ds.transitions("team", credit_scale="step")["reward"]
    assert torch.allclose(uniform, team[:, None].expand(-1, 2) / 2)


def test_credit_scale_episode_keeps_temporal_credit(annotated: Path) -> None:
    returns = dict(OfflineDataset.open(annotated, ENV).episodes().select("episode_id", "return_team").iter_rows())
    rewarded = [e for e in range(12) if returns[e] > 0]  # random-tier episodes with a positive return
    assert len(rewarded) >= 2, "the fixture should hold two rewarded random episodes"
    zero_sum, flipped = rewarded[:2]

    def credits(c: np.ndarray, ep: np.ndarray) -> np.ndarray:
        out = 3.0 * c + 0.25  # every step credited, rewarded or not
        out[ep == zero_sum] = np.array([1.0, -1.0])  # credits summing to 0
        out[ep == flipped] *= -1.0  # a negative total under a positive return
        return out

    rewrite_credits(annotated, credits)
    ds = OfflineDataset.open(annotated, ENV)
    team = ds.transitions("team")["reward"][:, 0].double()  # [M]
    raw = ds.transitions("credit_shapley")
    got = ds.transitions("credit_shapley", credit_scale="episode")["reward"]  # [M, N]
    step = ds.transitions("credit_shapley", credit_scale="step")["reward"]
    c, g, ep = raw["reward"].double(), got.double(), raw["episode_id"]
    assert got.dtype == torch.float32
    for e in ep.unique().tolist():
        rows = ep == e
        ret = team[rows].sum()
        assert float(ret) == pytest.approx(returns[e], abs=1e-5)
        assert float(g[rows].sum()) == pytest.approx(float(ret), abs=1e-5), f"episode {e} sums to its return"
        if e == zero_sum:  # no shares to keep: an even split R / (T·N)
            assert torch.allclose(g[rows], ret / rows.sum() / 2 * torch.ones_like(g[rows]), atol=1e-7)
            continue
        factor = ret / c[rows].sum()  # one factor for the whole episode: every ratio kept
        assert torch.allclose(g[rows], factor * c[rows], rtol=1e-5, atol=1e-7)
        if e == flipped:
            assert factor < 0 and (torch.sign(g[rows]) == -torch.sign(c[rows])).all()
        if e >= 12:  # expert: untouched Shapley credits already sum to the team reward each step
            assert torch.allclose(g[rows], c[rows], atol=1e-5)
    # temporal credit: unrewarded steps the critic credited, in rewarded episodes, keep credit
    ahead = (team == 0) & (c != 0).all(1) & torch.isin(ep, torch.tensor(rewarded[1:]))
    assert ahead.any() and (got[ahead] != 0).all() and (step[ahead] == 0).all()
    seq = ds.sequences(10, "credit_shapley", credit_scale="episode")
    assert torch.equal(seq["reward"][seq["mask"]], got)
    mdp = ds.to_d3rlpy(agent=1, reward="credit_shapley", credit_scale="episode")
    np.testing.assert_array_equal(np.concatenate([e.rewards[:, 0] for e in mdp.episodes]), got[:, 1].numpy())


@pytest.mark.parametrize("seed", range(5))
def test_scale_per_episode_against_a_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n = 60, 3
    credits = rng.normal(size=(m, n)).astype(np.float32)  # [M, N]
    team = np.where(rng.random(m) < 0.3, rng.random(m), 0.0).astype(np.float32)  # [M], mostly unrewarded
    episode = rng.choice([7, 3, 11, 42], size=m)  # [M] ids, rows interleaved
    credits[episode == 11] = np.array([2.0, -1.0, -1.0], np.float32)  # a zero-sum episode
    got = rescale_credits(credits, team, episode, "episode")
    assert got.dtype == np.float32 and got.shape == (m, n)
    for e in np.unique(episode):
        rows = episode == e
        c, ret = credits[rows].astype(np.float64), float(team[rows].sum(dtype=np.float64))
        want = np.full_like(c, ret / c.size) if abs(c.sum()) <= 1e-6 else c * (ret / c.sum())
        np.testing.assert_allclose(got[rows], want, rtol=1e-5, atol=1e-6)
        assert got[rows].sum(dtype=np.float64) == pytest.approx(ret, abs=1e-5)
    single = rescale_credits(credits[episode == 7], team[episode == 7], None, "episode")  # one episode [T, N]
    np.testing.assert_array_equal(single, got[episode == 7])
    assert rescale_credits(credits, team, episode, "none") is credits
    np.testing.assert_array_equal(rescale_credits(credits, team, episode, "step"), normalize_credits(credits, team))


def test_unknown_credit_scale_is_a_clear_error(ds: OfflineDataset) -> None:
    with pytest.raises(ConfigError, match=r"unknown credit_scale 'per-episode'; choose one of none, step, episode"):
        ds.transitions("credit_shapley", credit_scale="per-episode")
    with pytest.raises(ConfigError, match="normalize=True is now 'step'"):
        ds.transitions("credit_shapley", "cpu", True)  # type: ignore[arg-type]  # the old positional normalize
    with pytest.raises(ValueError, match="none, step, episode"):
        ds.to_d3rlpy(agent=0, credit_scale="Episode")
    with pytest.raises(ValueError, match="none, step, episode"):
        rescale_credits(np.zeros((2, 2), np.float32), np.zeros(2, np.float32), None, "return")


@pytest.mark.parametrize("length", [1, 7, 60])
def test_sequences(ds: OfflineDataset, length: int) -> None:
    tr = ds.transitions("credit_shapley")
    seq = ds.sequences(length, reward="credit_shapley")
    lengths = ds.episodes()["length"].to_numpy()
    b = int(np.ceil(lengths / length).sum())
    assert set(seq) == KEYS | {"mask"}
    assert seq["obs"].shape == (b, length, 2, ds.spec.obs_dim) and seq["mask"].shape == (b, length)
    assert seq["reward"].shape == (b, length, 2) and seq["state"].shape == (b, length, ds.spec.state_dim)
    mask = seq["mask"]
    assert int(mask.sum()) == tr["t"].shape[0]
    assert torch.equal(mask, torch.arange(length) < mask.sum(1, keepdim=True))  # real steps, then padding
    for key in KEYS:
        assert torch.equal(seq[key][mask], tr[key]), key  # real steps, in transition order
        assert not seq[key][~mask].any(), key  # padding is zero / False
    starts = seq["t"][:, 0]
    assert torch.equal(starts % length, torch.zeros_like(starts))  # chunks start at multiples of length
    assert (seq["episode_id"][:, 0].unsqueeze(1) == seq["episode_id"])[mask].all()  # one episode per row


def test_d3rlpy_round_trip_and_fit(ds: OfflineDataset) -> None:
    import d3rlpy

    tr = ds.transitions("credit_shapley")
    mdp = ds.to_d3rlpy(agent=1, reward="credit_shapley")
    episodes = ds.episodes()
    trunc = episodes.join(
        pl.DataFrame({"episode_id": tr["episode_id"].numpy(), "trunc": tr["truncated"].numpy()}).filter("trunc"),
        on="episode_id",
    )
    assert trunc.height > 0, "the fixture should hold a timed-out LBF episode"
    assert len(mdp.episodes) == 20
    assert mdp.transition_count == int(episodes["length"].sum()) - trunc.height  # d3rlpy drops those
    np.testing.assert_array_equal(np.concatenate([e.rewards[:, 0] for e in mdp.episodes]), tr["reward"][:, 1].numpy())
    np.testing.assert_array_equal(np.concatenate([e.observations for e in mdp.episodes]), tr["obs"][:, 1].numpy())
    np.testing.assert_array_equal(np.concatenate([e.actions[:, 0] for e in mdp.episodes]), tr["action"][:, 1].numpy())
    truncated_ids = set(trunc["episode_id"].to_list())
    order = list(dict.fromkeys(tr["episode_id"].tolist()))
    for episode_id, episode in zip(order, mdp.episodes, strict=True):
        assert episode.terminated == (episode_id not in truncated_ids)  # a timeout is not a terminal
    algo = d3rlpy.algos.DiscreteBCConfig(batch_size=16).create(device=False)
    algo.fit(
        mdp, n_steps=10, n_steps_per_epoch=10, logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=False
    )
    assert algo.predict(tr["obs"][:4, 1].numpy()).shape == (4,)
    with pytest.raises(LoaderError, match=r"agents 0\.\.1"):
        ds.to_d3rlpy(agent=2)


def test_sample_batch(ds: OfflineDataset) -> None:
    data = ds.transitions("env")
    one = sample_batch(data, 64, generator=torch.Generator().manual_seed(3))
    two = sample_batch(data, 64, generator=torch.Generator().manual_seed(3))
    assert set(one) == KEYS and one["obs"].shape == (64, 2, ds.spec.obs_dim) and one["t"].shape == (64,)
    assert all(torch.equal(one[k], two[k]) for k in KEYS)
    rows = {(int(e), int(t)): i for i, (e, t) in enumerate(zip(data["episode_id"], data["t"], strict=True))}
    idx = torch.tensor([rows[(int(e), int(t))] for e, t in zip(one["episode_id"], one["t"], strict=True)])
    assert all(torch.equal(one[k], data[k][idx]) for k in KEYS)  # whole rows, kept together


def test_open_and_lazy_scan_read_no_data_but_decoding_checks_pages(annotated: Path) -> None:
    path = annotated / RANDOM_STEPS
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the first data pages, far from the footer
    path.write_bytes(bytes(data))
    ds = OfflineDataset.open(annotated, ENV, tiers="random")  # footers only
    assert isinstance(ds.steps(lazy=True), pl.LazyFrame)
    with pytest.raises(ShardError, match="random-00000"):
        ds.transitions()


def test_schema_version_mismatch(lbf_dataset: Path) -> None:
    path = lbf_dataset / "meta/info.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "schema_version": 999, "package_version": "9.9.9"}))
    with pytest.raises(SchemaVersionError, match=r"9\.9\.9"):
        OfflineDataset.open(lbf_dataset, ENV)


def test_unknown_names_list_what_exists(ds: OfflineDataset, annotated_master: Path) -> None:
    with pytest.raises(UnknownEnvError, match=ENV) as env_err:
        OfflineDataset.open(annotated_master, "rware-tiny-2ag")
    with pytest.raises(UnknownTierError, match="expert, random") as tier_err:
        OfflineDataset.open(annotated_master, ENV, tiers=["expert", "medium"])
    with pytest.raises(UnknownCriticError, match="team, env, credit_shapley") as reward_err:
        ds.transitions("credit_llm_mca")
    assert all(isinstance(e.value, LlmcaError) for e in (env_err, tier_err, reward_err))
    with pytest.raises(LoaderError, match="Hub repo id"):
        OfflineDataset.open(annotated_master / "missing" / "deeper", ENV)


def test_hub_repo_id_without_the_hub_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llmca_data.download", None)  # not importable
    with pytest.raises(MissingExtraError, match=r"llmca_data\.download"):
        OfflineDataset.open("nobody-org/other", ENV)


def test_open_a_repo_published_to_a_local_hub(
    annotated: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """End to end through ``llmca_data.hub``, ``llmca_data.download`` and the local Hub-protocol server."""
    hub = pytest.importorskip("llmca_data.hub")
    build = pytest.importorskip("llmca_data.build")
    for key, value in request.getfixturevalue("hub_env")().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LLMCA_CACHE_DIR", str(tmp_path / "cache"))
    build.build(annotated)
    hub.publish(annotated, "llmca/loader-test")
    ds = OfflineDataset.open("llmca/loader-test", ENV, tiers="expert", revision="main")
    assert ds.root.is_relative_to(tmp_path / "cache") and ds.critics == ("shapley",)
    want = OfflineDataset.open(annotated, ENV, tiers="expert").transitions("credit_shapley")
    got = ds.transitions("credit_shapley")
    assert all(torch.equal(got[k], want[k]) for k in KEYS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resident(ds: OfflineDataset) -> None:
    cpu = ds.transitions("credit_shapley")
    gpu = ds.transitions("credit_shapley", device="cuda")
    assert all(v.is_cuda for v in gpu.values())
    assert all(torch.equal(gpu[k].cpu(), cpu[k]) for k in cpu)
    seq = ds.sequences(16, reward="credit_shapley", device="cuda")
    assert seq["mask"].is_cuda and torch.equal(seq["obs"][seq["mask"]].cpu(), cpu["obs"])
