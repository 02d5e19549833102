"""LLM-TACA task input of ``iql-cql``: task columns in the loader, one-hot input, dropout ramped to 1.

The task assignments come from a small rule-based critic (agent i works on food (episode + i) % 2,
none on even steps of episode 0), stored through the real ``annotate`` stage as ``task_food_split``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.critic import CriticOutput
from llmca_data.baselines.iql_cql import IQLCQLConfig, train_iql_cql
from llmca_data.baselines.networks import AgentNet, TaskDropout
from llmca_data.baselines.policy import RUN_CONFIG, RUN_METRICS, load_policy
from llmca_data.baselines.train import train
from llmca_data.envs.base import MultiAgentEnv
from llmca_data.errors import UnknownCriticError
from llmca_data.loaders import OfflineDataset
from llmca_data.rollout import Episode

torch.set_num_threads(1)

ENV = "lbf-8x8-2p-2f"


class FoodSplitCritic:
    """Uniform credits; agent i's task is food (episode_id + i) % 2 (−1 on even steps of episode 0)."""

    critic_id = "food-split"
    needs_env = False

    def params(self) -> dict[str, Any]:
        return {"type": "food-split"}

    def annotate(self, episode: Episode, env: MultiAgentEnv | None = None) -> CriticOutput:
        t, n = episode.reward_env.shape
        credits = np.repeat(episode.reward_team[:, None] / np.float32(n), n, axis=1).astype(np.float32)
        tasks = np.tile((episode.episode_id + np.arange(n)) % 2, (t, 1)).astype(np.int16)  # [T, N]
        if episode.episode_id == 0:
            tasks[::2] = -1
        return CriticOutput(credits, tasks=tasks)


@pytest.fixture
def tasked_dataset(lbf_dataset: Path) -> Path:
    annotate(lbf_dataset, FoodSplitCritic())
    return lbf_dataset


def test_loader_adds_task_and_next_task(tasked_dataset: Path) -> None:
    ds = OfflineDataset.open(tasked_dataset, ENV)
    assert ds.task_columns == ("task_food_split",)
    data = ds.transitions(tasks="food-split")
    task, next_task, ep = data["task"].numpy(), data["next_task"].numpy(), data["episode_id"].numpy()
    assert task.shape == next_task.shape == (ep.shape[0], 2) and task.dtype == np.int64
    for episode_id in np.unique(ep):
        rows = ep == episode_id
        if episode_id == 0:
            assert (task[rows][::2] == -1).all() and (task[rows][1::2] >= 0).all()
        else:
            np.testing.assert_array_equal(task[rows], np.tile((episode_id + np.arange(2)) % 2, (rows.sum(), 1)))
        np.testing.assert_array_equal(next_task[rows][:-1], task[rows][1:])  # successor's task
        np.testing.assert_array_equal(next_task[rows][-1], task[rows][-1])  # the last step keeps its own
    assert ds.sequences(8, tasks="task_food_split")["task"].shape[1:] == (8, 2)


def test_loader_names_the_fix_when_there_is_no_task_column(lbf_dataset: Path) -> None:
    with pytest.raises(UnknownCriticError, match="llmca annotate --critic llm-taca"):
        OfflineDataset.open(lbf_dataset, ENV).transitions(tasks="llm-taca")


def test_task_minus_one_is_the_zero_vector_and_no_task_means_none() -> None:
    torch.manual_seed(0)
    net = AgentNet(obs_dim=4, n_agents=2, n_actions=3, hidden=(8,), n_tasks=3)
    obs = torch.randn(5, 2, 4)  # [B, N, obs_dim]
    none = torch.full((5, 2), -1)
    torch.testing.assert_close(net(obs, none), net(obs))
    assert not torch.allclose(net(obs, torch.zeros(5, 2, dtype=torch.long)), net(obs))
    assert net.mlp[0].in_features == 4 + 2 + 3


def test_dropout_ramps_linearly_to_one_and_stays() -> None:
    dropout = TaskDropout(total_steps=100, end_fraction=0.5)
    task = torch.zeros(4000, 2, dtype=torch.long)
    seen = []
    for step in (0, 25, 50, 99):
        dropout.update(step)
        dropped, dropped_next = dropout.apply(task, task + 1)
        assert torch.equal(dropped == -1, dropped_next == -1)  # a step and its successor drop together
        seen.append((dropout.p, float((dropped == -1).float().mean())))
    assert [p for p, _ in seen] == [0.0, 0.5, 1.0, 1.0]
    assert seen[0][1] == 0.0 and abs(seen[1][1] - 0.5) < 0.05 and seen[2][1] == seen[3][1] == 1.0
    with pytest.raises(ValueError, match="reach 1"):
        TaskDropout(100, 0.0)


def test_iql_cql_with_task_input_trains_and_acts_without_it(tasked_dataset: Path, tmp_path: Path) -> None:
    config = IQLCQLConfig(steps=40, batch_size=32, hidden=(32,), eval_every=10, device="cpu",
                          reward="credit_food_split", task_input="food-split", task_dropout_end=0.5,
                          eval_episodes=2)  # fmt: skip
    run = train_iql_cql(tasked_dataset, ENV, None, tmp_path / "run", config)

    body = json.loads((run / RUN_CONFIG).read_text())
    assert body["task_input"] == "food-split" and body["n_tasks"] == 2
    assert IQLCQLConfig.from_dict(body) == config
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert [r["task_dropout"] for r in rows] == [0.45, 0.95, 1.0, 1.0]  # p before each logged update
    assert "eval_return" in rows[-1] and rows[-1]["eval_score"] is not None

    policy = load_policy(run)  # rebuilt with the task width, run without any task input
    obs, mask = np.zeros((2, 12), np.float32), np.ones((2, 6), np.bool_)
    action = policy.act(obs, mask)
    assert action.shape == (2,) and action.dtype == np.int64


def test_task_input_is_refused_where_it_does_not_apply(tasked_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="iql-cql option"):
        train("bc", tasked_dataset, ENV, None, tmp_path / "bc", steps=2, device="cpu", task_input="food-split")
