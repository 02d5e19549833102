"""``train_online`` end to end: learning, critic call counts, fallbacks, TACA dropout, the run's dataset."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_openai import FakeOpenAI, responder, status
from llm_replies import valid_reply_for
from match_env import MATCH_REWARD, MatchEnv

from llmca_data.annotation.critic import CriticOutput
from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
from llmca_data.annotation.registry import CriticOptions, make_critic
from llmca_data.baselines.evaluate import EvalConfig, evaluate_policy
from llmca_data.baselines.online import CURVE, OnlineConfig, train_online
from llmca_data.baselines.online_io import RUN_DATASET
from llmca_data.baselines.online_learner import rewards_from
from llmca_data.baselines.policy import load_config, load_policy
from llmca_data.config import ConfigError
from llmca_data.envs.base import MultiAgentEnv
from llmca_data.loaders import OfflineDataset
from llmca_data.rollout import Episode, run_episode
from llmca_data.schema import from_fsl
from llmca_data.shards import Manifest, read_shard
from llmca_data.validate import validate

LBF = "lbf-8x8-2p-2f-coop"
SMALL = {"eval_episodes": 2, "device": "cpu", "hidden": (32,), "learning_starts": 1, "updates_per_step": 0.05}


def curve(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / CURVE).read_text().splitlines()]


def stored(run: Path, kind: str, env_id: str = LBF) -> Any:
    import pyarrow as pa

    root = run / RUN_DATASET
    names = Manifest.load(root).shards(env_id, kind)
    return pa.concat_tables([read_shard(root / str(n)) for n in names])


class CountingCritic:
    """A real ``Critic`` (counterfactual by default), counting its calls and the episodes it sees."""

    def __init__(self, critic_id: str = "counterfactual") -> None:
        self.inner = make_critic(critic_id)
        self.critic_id, self.needs_env = self.inner.critic_id, True
        self.calls: list[list[int]] = []

    def params(self) -> dict[str, Any]:
        return self.inner.params()

    def annotate(self, episode: Episode, env: MultiAgentEnv | None) -> CriticOutput:
        return self.annotate_batch([episode], env)[0]

    def annotate_batch(self, episodes: list[Episode], env: MultiAgentEnv | None) -> list[CriticOutput]:
        self.calls.append([e.episode_id for e in episodes])
        return [self.inner.annotate(e, env) for e in episodes]


def test_ddqn_learns_the_match_game(tmp_path: Path) -> None:
    config = OnlineConfig(
        "match-2a", critic="team", episodes=120, critic_every=4, eval_every=12, eval_episodes=20,
        checkpoint_every=60, device="cpu", hidden=(32,), lr=3e-3, gamma=0.5, batch_size=64,
        learning_starts=64, updates_per_step=1.0, target_every=50, eps_fraction=0.5,
    )  # fmt: skip
    result = train_online(config, tmp_path / "run", env_factory=MatchEnv)
    rows = curve(tmp_path / "run")
    assert [r["episodes"] for r in rows] == list(range(12, 121, 12))
    assert rows[0]["updates"] == 0 and rows[0]["eval_return"] < 0.9  # untrained
    assert result.final_return is not None and result.final_return >= 0.95, rows


def test_critic_called_once_per_block_and_never_for_committed_episodes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    critic = CountingCritic()
    config = OnlineConfig("match-2a", critic="counterfactual", episodes=6, critic_every=3, eval_every=3,
                          checkpoint_every=3, **SMALL)  # fmt: skip
    train_online(config, run, critic=critic, env_factory=MatchEnv)
    assert critic.calls == [[0, 1, 2], [3, 4, 5]]
    saved = tmp_path / "saved"  # the checkpoint after 6 episodes
    shutil.copytree(run / "checkpoints", saved / "checkpoints")
    shutil.copy(run / "checkpoint.json", saved / "checkpoint.json")
    train_online(replace(config, episodes=12), run, critic=critic, env_factory=MatchEnv)
    assert critic.calls[2:] == [[6, 7, 8], [9, 10, 11]], "a longer rerun annotates only the new episodes"
    # a kill between the dataset commit and the checkpoint: the dataset is ahead of the checkpoint
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(saved / "checkpoints", run / "checkpoints")
    shutil.copy(saved / "checkpoint.json", run / "checkpoint.json")
    train_online(replace(config, episodes=12), run, critic=critic, env_factory=MatchEnv)
    assert len(critic.calls) == 4, "episodes already in the run's dataset were annotated again"
    assert [r["episodes"] for r in curve(run)] == [3, 6, 9, 12]
    ids = stored(run, "episodes", "match-2a").column("episode_id").to_pylist()
    assert sorted(ids) == list(range(12))


def test_dataset_validates_and_loads_with_credits(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = OnlineConfig(LBF, critic="shapley", episodes=6, critic_every=2, eval_every=2, checkpoint_every=4, **SMALL)
    train_online(config, run)
    report = validate(run / RUN_DATASET)
    assert report.ok, report.problems
    ds = OfflineDataset.open(run / RUN_DATASET, LBF)
    assert ds.tiers == ("replay",) and ds.critics == ("shapley",)
    data = ds.transitions(reward="credit_shapley")
    steps = stored(run, "steps")
    assert data["reward"].shape == (steps.num_rows, 2)
    np.testing.assert_allclose(data["reward"].sum(-1).numpy(), steps.column("reward_team").to_numpy(), atol=1e-5)
    assert stored(run, "annotations").column("critic").to_pylist() == ["shapley"] * 6
    body = load_config(run)
    assert body["algo"] == "ddqn-online" and body["critic_params"]["type"] == "shapley"
    result = evaluate_policy(load_policy(run), LBF, {}, None)
    assert result["episodes"] == EvalConfig().episodes == 100  # protocol v2


class ScaledUniformCritic(CountingCritic):
    """The uniform critic with every credit multiplied by 37: right shares, wrong scale (as an LLM's may be)."""

    def __init__(self) -> None:
        super().__init__("uniform")

    def annotate_batch(self, episodes: list[Episode], env: MultiAgentEnv | None) -> list[CriticOutput]:
        return [replace(out, credits=out.credits * 37.0) for out in super().annotate_batch(episodes, env)]


@pytest.mark.parametrize("mode", ["step", "episode"])
def test_credit_scale_puts_scaled_credits_on_the_reward_scale(tmp_path: Path, mode: str) -> None:
    settings = {"episodes": 12, "critic_every": 3, "eval_every": 3, "checkpoint_every": 12, **SMALL,
                "learning_starts": 20, "updates_per_step": 0.5}  # fmt: skip
    uniform = OnlineConfig("match-2a", critic="uniform", **settings)
    train_online(uniform, tmp_path / "uniform", env_factory=MatchEnv)
    scaled = replace(uniform, credit_scale=mode)
    train_online(scaled, tmp_path / "scaled", critic=ScaledUniformCritic(), env_factory=MatchEnv)
    train_online(uniform, tmp_path / "raw", critic=ScaledUniformCritic(), env_factory=MatchEnv)
    losses = {name: [r["loss"] for r in curve(tmp_path / name) if r["loss"] is not None]
              for name in ("uniform", "scaled", "raw")}  # fmt: skip
    assert len(losses["uniform"]) >= 2 and losses["uniform"][-1] > 0
    # 37× uniform credits, rescaled per step or per episode (one factor 1/37), are the uniform ones
    assert losses["scaled"] == pytest.approx(losses["uniform"], rel=1e-4), "37× credits, rescaled, are uniform"
    assert losses["raw"][-1] > 10 * losses["uniform"][-1], "unscaled, the 37× credits reach the TD targets"
    stored_credits = from_fsl(stored(tmp_path / "scaled", "steps", "match-2a").column("credit_uniform"), (2,))
    team = stored(tmp_path / "scaled", "steps", "match-2a").column("reward_team").to_numpy()
    np.testing.assert_allclose(stored_credits.sum(1), 37.0 * team, rtol=1e-5)  # the dataset keeps raw credits
    assert load_config(tmp_path / "scaled")["credit_scale"] == mode


def scripted_episode() -> Episode:
    """A real ``MatchEnv`` episode whose agents match the target on even steps only: team reward
    2 × ``MATCH_REWARD`` at t = 0, 2 and none at t = 1, 3."""

    class EvenSteps:
        policy_id = "even-steps"

        def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
            self.t = 0

        def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> np.ndarray:
            target = np.asarray(env.describe()["targets"])  # [N] this step's targets
            self.t += 1
            return target if self.t % 2 else (target + 1) % 3

    return run_episode(MatchEnv(), EvenSteps(), seed=5, tier="replay")


def test_rewards_from_each_credit_scale() -> None:
    episode = scripted_episode()
    team = episode.reward_team  # [T]
    np.testing.assert_array_equal(team, [2 * MATCH_REWARD, 0.0, 2 * MATCH_REWARD, 0.0])
    credits = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0], [0.5, 0.5]], np.float32)  # [T, N] credit on t = 1, 3 too
    output = CriticOutput(credits)
    none, _, fell_back = rewards_from(episode, output, "none")
    np.testing.assert_array_equal(none, credits)
    assert not fell_back
    step, _, _ = rewards_from(episode, output, "step")
    np.testing.assert_allclose(step, [[0.25, 0.0], [0.0, 0.0], [0.0, 0.25], [0.0, 0.0]])  # t = 1, 3 lose their credit
    whole, _, _ = rewards_from(episode, output, "episode")
    np.testing.assert_allclose(whole, credits * (0.5 / 6.0), rtol=1e-6)  # one factor: return 0.5 / credit total 6
    assert whole.dtype == np.float32 and whole.sum() == pytest.approx(episode.return_team, abs=1e-6)
    assert (whole[[1, 3]] != 0).any(axis=1).all(), "unrewarded steps that led to reward keep credit"
    even, _, _ = rewards_from(episode, CriticOutput(np.array([[1, -1]] * 4, np.float32)), "episode")
    np.testing.assert_allclose(even, np.full((4, 2), 0.5 / 8))  # zero-sum credits: return / (T·N)
    for mode in ("none", "step", "episode"):  # no critic, or a failed one: the team reward, unscaled
        np.testing.assert_array_equal(rewards_from(episode, None, mode)[0], np.repeat(team[:, None], 2, 1))
        failed, _, fell_back = rewards_from(episode, CriticOutput.failed(4, 2, "bad reply"), mode)
        np.testing.assert_array_equal(failed, np.repeat(team[:, None], 2, 1))
        assert fell_back
    with pytest.raises(ConfigError, match="none, step, episode"):
        rewards_from(episode, None, "per-episode")


def test_rewards_from_under_a_delayed_team_reward() -> None:
    episode = scripted_episode()
    ret = float(episode.reward_team.sum())  # 4 × MATCH_REWARD, earned at t = 0 and 2
    team, _, _ = rewards_from(episode, None, team_reward="delayed")
    np.testing.assert_allclose(team, [[0, 0], [0, 0], [0, 0], [ret, ret]])
    env, _, _ = rewards_from(episode, CriticOutput(episode.reward_env.copy()), team_reward="delayed")
    np.testing.assert_allclose(env[:3], 0)
    np.testing.assert_allclose(env[3], episode.reward_env.sum(axis=0))  # each agent's total, at the end
    credits = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0], [0.5, 0.5]], np.float32)
    kept, _, _ = rewards_from(episode, CriticOutput(credits), "none", "delayed", critic_delayed=True)
    np.testing.assert_array_equal(kept, credits)  # a critic that saw the delayed reward: its credits as given
    scaled, _, _ = rewards_from(episode, CriticOutput(credits), "episode", "delayed", critic_delayed=True)
    assert scaled.sum() == pytest.approx(ret, abs=1e-6) and (scaled[:3] != 0).any()
    failed, _, fell_back = rewards_from(episode, CriticOutput.failed(4, 2, "bad"), team_reward="delayed")
    np.testing.assert_array_equal(failed, team)
    assert fell_back
    with pytest.raises(ConfigError, match="choose true"):
        rewards_from(episode, None, team_reward="late")


def test_a_delayed_run_learns_from_the_delayed_reward_and_only_matching_critics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use team, env, shapley-delayed, counterfactual-delayed"):
        OnlineConfig("match-2a", critic="shapley", team_reward="delayed")
    with pytest.raises(ConfigError, match="team_reward"):
        OnlineConfig("match-2a", team_reward="late")  # type: ignore[arg-type]
    for critic in ("env", "counterfactual-delayed"):
        OnlineConfig("match-2a", critic=critic, team_reward="delayed")
    settings = {"episodes": 6, "critic_every": 3, "eval_every": 3, "checkpoint_every": 6, **SMALL,
                "learning_starts": 4, "updates_per_step": 0.5}  # fmt: skip
    runs = {}
    for name, team_reward in (("true", "true"), ("delayed", "delayed")):
        train_online(OnlineConfig("match-2a", team_reward=team_reward, **settings), tmp_path / name,
                     env_factory=MatchEnv)  # fmt: skip
        runs[name] = [r["loss"] for r in curve(tmp_path / name)]
    assert runs["true"] != runs["delayed"], "the same episodes with the reward moved to the end train otherwise"
    assert load_config(tmp_path / "delayed")["team_reward"] == "delayed"
    critic = make_critic("shapley-delayed")
    config = OnlineConfig("match-2a", critic="shapley-delayed", team_reward="delayed", **settings)
    result = train_online(config, tmp_path / "shapley", critic=critic, env_factory=MatchEnv)
    assert result.episodes == 6 and result.fallback_episodes == 0 and result.critic_calls == 2


def test_online_config_credit_scale_is_checked_and_reads_the_old_key() -> None:
    assert OnlineConfig("match-2a").credit_scale == "none"
    with pytest.raises(ConfigError, match="none, step, episode"):
        OnlineConfig("match-2a", credit_scale="steps")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'credit_scale' must be one of 'none', 'step', 'episode'"):
        OnlineConfig.from_dict({"env_id": "match-2a", "credit_scale": "Step"}, strict=True)
    # a run's config.json written before credit_scale existed
    assert OnlineConfig.from_dict({"env_id": "match-2a", "normalize_credits": True}).credit_scale == "step"
    assert OnlineConfig.from_dict({"env_id": "match-2a", "normalize_credits": False}).credit_scale == "none"
    assert OnlineConfig.from_dict({"env_id": "match-2a", "normalize_credits": True}, strict=True).credit_scale == "step"
    with pytest.raises(ConfigError, match="drop normalize_credits"):
        OnlineConfig.from_dict({"env_id": "match-2a", "normalize_credits": True, "credit_scale": "episode"})
    with pytest.raises(ConfigError, match=r"'normalize_credits' .* must be bool"):
        OnlineConfig.from_dict({"env_id": "match-2a", "normalize_credits": "yes"}, strict=True)


def llm_config(fake: FakeOpenAI, critic: str, **overrides: Any) -> OnlineConfig:
    settings: dict[str, Any] = {
        "critic": critic, "episodes": 4, "critic_every": 2, "eval_every": 2, "checkpoint_every": 2,
        "critic_options": CriticOptions(llm=LLMConfig(
            base_url=fake.base_url, model="fake-model", response_format="json_object", episodes_per_prompt=2,
            max_window=50, transport=TransportConfig(timeout_s=5.0, max_retries=0),
        )), **SMALL,
    }  # fmt: skip
    settings.update(overrides)
    return OnlineConfig(LBF, **settings)


def test_llm_critic_one_request_per_block_and_cached_rerun(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.default = responder(lambda body: valid_reply_for(body))
    config = llm_config(fake_openai, "llm-mca", learning_starts=10_000)
    first = train_online(config, tmp_path / "a")
    assert fake_openai.request_count == 2 and first.critic_calls == 2 and first.fallback_episodes == 0
    rows = curve(tmp_path / "a")
    assert rows[-1]["llm_requests"] == 2 and rows[-1]["tokens_in"] > 0
    train_online(config, tmp_path / "b")  # same seed, same episodes: every request is in the cache
    assert fake_openai.request_count == 2
    assert curve(tmp_path / "b")[-1]["llm_requests"] == 0
    assert validate(tmp_path / "b" / RUN_DATASET).ok


def test_a_finished_llm_run_reruns_as_a_no_op(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.default = responder(lambda body: valid_reply_for(body))
    config = llm_config(fake_openai, "llm-mca", learning_starts=10_000)
    train_online(config, tmp_path / "run")
    body = load_config(tmp_path / "run")
    model = body["critic_options"]["llm"]["model"]
    assert model == config.critic_options.llm.model and body["critic_model"] == "fake-model"  # the config as given
    sent = fake_openai.request_count
    train_online(config, tmp_path / "run")  # the same command again: accepted, nothing redone
    assert fake_openai.request_count == sent


def test_failed_llm_annotation_falls_back_to_team_reward(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.default = status(400)
    result = train_online(llm_config(fake_openai, "llm-mca"), tmp_path / "run")
    assert result.fallback_episodes == 4
    assert curve(tmp_path / "run")[-1]["fallback_episodes"] == 4
    ann = stored(tmp_path / "run", "annotations")
    assert ann.column("status").to_pylist() == ["failed"] * 4
    credits = from_fsl(stored(tmp_path / "run", "steps").column("credit_llm_mca"), (2,))
    assert np.isnan(credits).all(), "a failed episode stores NaN credits, never zeros"
    assert validate(tmp_path / "run" / RUN_DATASET).ok


def test_taca_dropout_reaches_one_and_policy_acts_without_tasks(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.default = responder(lambda body: valid_reply_for(body))
    run = tmp_path / "run"
    train_online(llm_config(fake_openai, "llm-taca", episodes=6, task_dropout_end=0.5), run)
    rows = curve(run)
    assert rows[0]["task_dropout"] == pytest.approx(1 / 1.5) and rows[-1]["task_dropout"] == 1.0
    assert load_config(run)["n_tasks"] == 2
    tasks = from_fsl(stored(run, "steps").column("task_llm_taca"), (2,))
    assert (tasks >= 0).any()
    policy = load_policy(run)
    assert policy.net.n_tasks == 2  # type: ignore[attr-defined]
    obs = np.zeros((2, policy.net.obs_dim), np.float32)  # type: ignore[attr-defined]
    assert policy.act(obs, np.ones((2, 6), np.bool_)).shape == (2,)
