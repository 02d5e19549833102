"""A stored episode re-simulates exactly, and tampering is refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmca_data.collect import CollectConfig, collect
from llmca_data.envs import CONTRACT_ENV_IDS, env_spec, make_env
from llmca_data.errors import ReplayMismatchError
from llmca_data.rollout import replay, replay_iter
from llmca_data.shards import Manifest, read_shard
from llmca_data.tables import tables_to_episodes


def stored_episodes(root: Path, env_id: str, tier: str):  # type: ignore[no-untyped-def]
    manifest = Manifest.load(root)
    steps = read_shard(root / str(manifest.shards(env_id, "steps", tier)[0]))
    eps = read_shard(root / str(manifest.shards(env_id, "episodes", tier)[0]))
    return tables_to_episodes(steps, eps, env_spec(env_id))


@pytest.mark.parametrize("env_id", CONTRACT_ENV_IDS)
def test_stored_episodes_replay_exactly(tmp_path: Path, env_id: str) -> None:
    episodes = 1 if env_id.startswith("rware") else 3
    collect(tmp_path, CollectConfig(env_id, "medium", episodes, seed=11))
    for episode in stored_episodes(tmp_path, env_id, "medium"):
        replay(episode)


def test_replay_refuses_a_tampered_episode(lbf_dataset: Path) -> None:
    episode = stored_episodes(lbf_dataset, "lbf-8x8-2p-2f", "random")[0]
    episode.obs = episode.obs.copy()
    episode.obs[3, 0, 0] += 1.0
    with pytest.raises(ReplayMismatchError, match="observation at step 3"):
        replay(episode)


def test_replay_names_changed_versions(lbf_dataset: Path) -> None:
    episode = stored_episodes(lbf_dataset, "lbf-8x8-2p-2f", "random")[0]
    episode.versions = {**episode.versions, "lbforaging": "0.0.1"}
    episode.final_obs = episode.final_obs + 1
    with pytest.raises(ReplayMismatchError, match="install the recorded versions"):
        replay(episode)


def test_replay_iter_lets_a_critic_branch_and_come_back(lbf_dataset: Path) -> None:
    """Critics snapshot the env at step t, try other actions, restore, and replay goes on."""
    episode = stored_episodes(lbf_dataset, "lbf-8x8-2p-2f", "expert")[0]
    env = make_env("lbf-8x8-2p-2f")
    for t, live in replay_iter(episode, env):
        snap = live.snapshot()
        live.step(np.zeros(2, np.int64))
        live.restore(snap)
        np.testing.assert_array_equal(live.state(), episode.state[t])
