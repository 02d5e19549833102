"""The critic registry: one contract for every registered critic, options that travel as a typed
config (never as a string), and plugins registered in code or found through an entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llmca_data.annotation import registry
from llmca_data.annotation.critic import CriticOutput
from llmca_data.annotation.llm.config import LLMConfig
from llmca_data.annotation.registry import (
    CriticEntry,
    CriticOptions,
    check_critic,
    check_import_id,
    critic_ids,
    make_critic,
    register_critic,
)
from llmca_data.config import ConfigError
from llmca_data.envs import make_env
from llmca_data.errors import UnknownCriticError
from llmca_data.rollout import Episode, run_episode, tier_rng
from llmca_data.tiers import tier_policy

LBF = "lbf-8x8-2p-2f"


def play(seed: int = 3) -> Episode:
    return run_episode(make_env(LBF), tier_policy(LBF, "expert", tier_rng(seed)), seed, "expert")


class HalfCritic:
    """A plugin: half the team reward to agent 0, the rest to the others."""

    critic_id = "half-split"
    needs_env = False

    def params(self) -> dict[str, object]:
        return {"type": "half-split"}

    def annotate(self, episode: Episode, env: object = None) -> CriticOutput:
        t, n = episode.reward_env.shape
        credits = np.zeros((t, n), np.float32)  # [T, N]
        credits[:, 0] = episode.reward_team / 2
        credits[:, 1:] = (episode.reward_team / 2 / (n - 1))[:, None]
        return CriticOutput(credits)


ENTRY = CriticEntry("half-split", "plugin", "half to agent 0", lambda critic_id, options: HalfCritic())


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


@pytest.mark.parametrize("critic_id", [c for c in critic_ids() if c not in critic_ids("llm")])
def test_every_reference_critic_meets_the_contract(critic_id: str) -> None:
    critic = make_critic(critic_id)
    assert critic.critic_id == check_critic(critic_id) == critic_id
    json.dumps(critic.params())  # provenance is JSON
    episode = play()
    out = critic.annotate(episode, make_env(LBF) if critic.needs_env else None)
    assert out.status == "ok" and out.credits.shape == (episode.length, 2) and out.credits.dtype == np.float32
    assert np.isfinite(out.credits).all()
    if critic_id in ("uniform", "shapley"):  # efficient by construction (counterfactual need not be)
        np.testing.assert_allclose(out.credits.sum(1), episode.reward_team, atol=1e-5)


@pytest.mark.parametrize("critic_id", ["llm-mca", "llm-taca"])
def test_llm_critics_take_their_options_nested(critic_id: str) -> None:
    options = CriticOptions(seed=7, llm=LLMConfig(base_url="http://127.0.0.1:9/v1", model="m", max_window=12))
    critic = make_critic(critic_id, options)
    assert critic.critic_id == critic_id
    params = critic.params()
    assert params["critic"] == critic_id and params["max_window"] == 12 and params["seed"] == 7
    delayed = CriticOptions(llm=LLMConfig(team_reward="delayed"))
    assert check_critic(critic_id, delayed) == f"{critic_id}-delayed"


def test_horizon_is_an_option_and_the_h_id_a_name() -> None:
    by_option = make_critic("counterfactual", CriticOptions(horizon=5, gamma=0.9))
    by_name = make_critic("counterfactual-h5", CriticOptions(gamma=0.9))
    assert by_option.critic_id == by_name.critic_id == "counterfactual-h5"
    assert by_option.params() == by_name.params()
    episode = play()
    np.testing.assert_array_equal(
        by_option.annotate(episode, make_env(LBF)).credits, by_name.annotate(episode, make_env(LBF)).credits
    )
    with pytest.raises(ConfigError, match="horizon"):
        make_critic("counterfactual-h5", CriticOptions(horizon=3))


def test_the_delayed_reference_critics_are_registered_ids_of_their_own() -> None:
    assert {"shapley-delayed", "counterfactual-delayed"} <= set(critic_ids("reference"))
    assert make_critic("shapley-delayed").critic_id == check_critic("shapley-delayed") == "shapley-delayed"
    assert make_critic("counterfactual-delayed", CriticOptions(gamma=0.5)).params()["gamma"] == 1.0  # undiscounted
    with pytest.raises(ConfigError, match="runs to the episode's end; drop horizon=5"):
        make_critic("counterfactual-delayed", CriticOptions(horizon=5))
    with pytest.raises(ConfigError, match="belongs to a registered critic"):
        check_import_id("shapley-delayed")


def test_bad_options_and_ids_are_config_errors() -> None:
    with pytest.raises(UnknownCriticError, match="uniform, shapley, counterfactual, env, llm-mca, llm-taca"):
        make_critic("shapely")
    with pytest.raises(ConfigError, match="gamma"):
        CriticOptions(gamma=float("nan"))
    with pytest.raises(ConfigError, match="samples"):
        CriticOptions(samples=0)
    options = CriticOptions.from_dict({"horizon": 2, "llm": {"model": "m", "max_window": 8}}, strict=True)
    assert options.llm.max_window == 8 and CriticOptions.from_dict(options.to_dict()) == options
    with pytest.raises(ConfigError, match=r"'llm\.max_windw'"):
        CriticOptions.from_dict({"llm": {"max_windw": 8}}, strict=True)


def test_a_plugin_registered_in_code_annotates_a_dataset(clean_registry: None, lbf_dataset: Path) -> None:
    from llmca_data.annotation.annotate import annotate
    from llmca_data.loaders import OfflineDataset

    register_critic(ENTRY)
    assert "half-split" in critic_ids("plugin")
    result = annotate(lbf_dataset, make_critic("half-split"), tiers=("expert",))
    assert result.episodes == 8 and result.failed == 0
    steps = OfflineDataset.open(lbf_dataset, LBF, tiers=("expert",)).steps(columns=["reward_team", "credit_half_split"])
    credits = np.stack(steps["credit_half_split"].to_numpy())  # [M, N]
    np.testing.assert_allclose(credits[:, 0], steps["reward_team"].to_numpy() / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="already registered"):
        register_critic(CriticEntry("shapley", "plugin", "", ENTRY.build))
    with pytest.raises(ConfigError, match="lower-case"):
        register_critic(CriticEntry("Half Split", "plugin", "", ENTRY.build))


def test_an_entry_point_plugin_works_from_the_command_line(lbf_dataset: Path, tmp_path: Path) -> None:
    """A package that declares ``llmca_data.critics`` is found by ``llmca annotate`` with no code change."""
    site = tmp_path / "site"
    (site / "thirds_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "thirds_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: thirds-plugin\n"
                                                                   "Version: 0.1\n")  # fmt: skip
    (site / "thirds_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[llmca_data.critics]\nthirds = thirds_plugin:ENTRY\n"
    )
    (site / "thirds_plugin.py").write_text(
        "import numpy as np\n"
        "from llmca_data.annotation.critic import CriticOutput\n"
        "from llmca_data.annotation.registry import CriticEntry\n"
        "class Thirds:\n"
        "    critic_id = 'thirds'\n"
        "    needs_env = False\n"
        "    def params(self):\n"
        "        return {'type': 'thirds'}\n"
        "    def annotate(self, episode, env=None):\n"
        "        t, n = episode.reward_env.shape\n"
        "        return CriticOutput(np.full((t, n), 1 / 3, np.float32))\n"
        "ENTRY = CriticEntry('thirds', 'plugin', 'a third each', lambda critic_id, options: Thirds())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-c", "from llmca_data.cli import main; main()"]
    proc = subprocess.run([*cli, "annotate", "--dataset", str(lbf_dataset), "--critic", "thirds", "--tier", "random"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "thirds: 12 episodes annotated" in proc.stdout
    info = json.loads((lbf_dataset / "meta" / "info.json").read_text())
    assert info["critics"]["thirds"]["params"] == {"type": "thirds"}
