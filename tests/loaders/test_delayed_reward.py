"""The delayed team reward in the loaders and the offline learners (``team_reward="delayed"``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.baselines.train import make_config, train
from llmca_data.config import ConfigError
from llmca_data.loaders import OfflineDataset, delay_to_episode_end
from llmca_data.loaders.offline import LoaderError

LBF = "lbf-8x8-2p-2f"


def test_delay_to_episode_end_moves_each_episodes_sums_to_its_last_row() -> None:
    rewards = np.array([[1, 0], [0, 2], [3, 1], [0, 0], [5, 5]], np.float32)  # [M=5, N=2]
    episode = np.array([0, 0, 0, 1, 2])
    out = delay_to_episode_end(rewards, episode)
    np.testing.assert_array_equal(out, [[0, 0], [0, 0], [4, 3], [0, 0], [5, 5]])
    assert out.dtype == np.float32 and delay_to_episode_end(rewards[:0], episode[:0]).shape == (0, 2)


def test_delayed_team_and_env_rewards_sum_to_the_true_ones_at_each_episodes_end(lbf_dataset: Path) -> None:
    ds = OfflineDataset.open(lbf_dataset, LBF, ["expert"])
    true, delayed = ds.transitions("team"), ds.transitions("team", team_reward="delayed")
    ep = true["episode_id"].numpy()  # [M]
    last = np.append(ep[1:] != ep[:-1], True)  # [M] an episode's last step
    returns = np.bincount(np.unique(ep, return_inverse=True)[1], weights=true["reward"][:, 0].numpy())  # [E]
    assert returns.max() > 0, "the expert data has rewards to delay"
    np.testing.assert_allclose(delayed["reward"][last, 0].numpy(), returns, rtol=1e-6)
    assert (delayed["reward"][~last] == 0).all()
    np.testing.assert_array_equal(delayed["obs"].numpy(), true["obs"].numpy())  # only the reward moves
    env_true, env_delayed = ds.transitions("env"), ds.transitions("env", team_reward="delayed")
    assert not np.array_equal(env_delayed["reward"][last, 0].numpy(), env_delayed["reward"][last, 1].numpy())
    for agent in range(2):  # each agent's own episode total, at the end
        totals = np.bincount(np.unique(ep, return_inverse=True)[1], weights=env_true["reward"][:, agent].numpy())
        np.testing.assert_allclose(env_delayed["reward"][last, agent].numpy(), totals, rtol=1e-6)
    seqs = ds.sequences(10, "team", team_reward="delayed")
    assert float(seqs["reward"].sum()) == pytest.approx(float(delayed["reward"].sum()), rel=1e-6)


def test_only_critics_that_saw_the_delayed_reward_train_in_the_delayed_setting(lbf_dataset: Path) -> None:
    for critic_id in ("shapley", "shapley-delayed"):
        annotate(lbf_dataset, make_critic(critic_id), tiers=("expert",))
    ds = OfflineDataset.open(lbf_dataset, LBF, ["expert"])
    with pytest.raises(LoaderError, match="annotate with shapley-delayed or counterfactual-delayed"):
        ds.transitions("credit_shapley", team_reward="delayed")
    credits = ds.transitions("credit_shapley_delayed", team_reward="delayed")["reward"]  # kept as the critic gave them
    stored = ds.transitions("credit_shapley_delayed")["reward"]
    np.testing.assert_array_equal(credits.numpy(), stored.numpy())
    scaled = ds.transitions("credit_shapley_delayed", credit_scale="episode", team_reward="delayed")["reward"]
    team = ds.transitions("team")["reward"][:, 0]
    assert float(scaled.sum()) == pytest.approx(float(team.sum()), rel=1e-5)  # episode sums = returns
    with pytest.raises(ConfigError, match=r"choose true .* or delayed"):
        ds.transitions("team", team_reward="late")
    with pytest.raises(LoaderError, match="does not belong to the delayed setting"):
        ds.to_d3rlpy(0, "credit_shapley", team_reward="delayed")


def test_q_learners_record_and_use_the_delayed_team_reward(lbf_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="team_reward"):
        make_config("vdn-cql", settings={"team_reward": "sometimes"})
    with pytest.raises(ConfigError, match="team_reward"):
        make_config("bc", settings={"team_reward": "delayed"})  # BC has no reward to delay
    settings = {"team_reward": "delayed", "hidden": [16], "batch_size": 16, "eval_episodes": 0}
    for algo in ("iql-cql", "vdn-cql"):
        run = train(algo, lbf_dataset, LBF, ["expert"], tmp_path / algo, steps=3, overrides=settings)
        assert json.loads((run / "config.json").read_text())["team_reward"] == "delayed"
    with pytest.raises(LoaderError, match="does not belong to the delayed setting"):
        annotate(lbf_dataset, make_critic("counterfactual"), tiers=("expert",))
        train("iql-cql", lbf_dataset, LBF, ["expert"], tmp_path / "cf", reward="credit_counterfactual", steps=3,
              overrides=settings)  # fmt: skip
