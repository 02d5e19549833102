"""The algorithm registry: one contract for every registered algorithm, strict configs, refused
reward sources, the divergence guard, return filtering and the leaderboard's allowlist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llmca_data.baselines.bc import FilteredBCConfig, top_episodes
from llmca_data.baselines.evaluate import run_diverged
from llmca_data.baselines.iql_cql import IQLCQLConfig, fit_iql_cql
from llmca_data.baselines.policy import RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS, load_policy
from llmca_data.baselines.q_learning import DIVERGENCE_FACTOR, q_bound
from llmca_data.baselines.registry import ALGORITHMS, OFFLINE_ALGOS, UnknownAlgorithmError, get_algorithm
from llmca_data.baselines.train import make_config, train
from llmca_data.baselines.training import GUARD_WARMUP
from llmca_data.config import ConfigError, load_settings
from llmca_data.loaders import OfflineDataset

torch.set_num_threads(1)
ENV = "lbf-8x8-2p-2f"


def _small(algo: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"steps": 20, "batch_size": 32, "hidden": [32], "seed": 3, "device": "cpu"}
    if "eval_every" in get_algorithm(algo).config_class().field_names():
        settings |= {"eval_every": 10, "eval_episodes": 0}
    return settings


@pytest.mark.parametrize("algo", OFFLINE_ALGOS)
def test_every_registered_algorithm_meets_the_contract(
    algo: str, lbf_dataset_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # d3rlpy must not leave logs behind
    spec = get_algorithm(algo)
    reward = "env" if spec.rewards else "team"
    run = train(algo, lbf_dataset_master, ENV, ["expert"], tmp_path / "run", reward=reward, overrides=_small(algo))
    assert sorted(p.name for p in run.iterdir()) == sorted([RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS])
    assert not (tmp_path / "d3rlpy_logs").exists()
    body = json.loads((run / RUN_CONFIG).read_text())
    assert body["algo"] == algo and body["env_id"] == ENV and "package_version" in body
    # the saved config reads back (leniently, among the run facts) as the config that trained it
    config = make_config(algo, reward=reward, settings=_small(algo))
    assert spec.config_class().from_dict(body) == config
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert rows and all(np.isfinite(r["loss"]) for r in rows)
    policy = load_policy(run)
    assert policy.algo == algo and policy.n_agents == 2
    tr = OfflineDataset.open(lbf_dataset_master, ENV, ["random"]).transitions()
    for m in range(0, 40, 7):
        action = policy.act(tr["obs"][m].numpy(), tr["action_mask"][m].numpy())
        assert action.dtype == np.int64 and action.shape == (2,)
        assert tr["action_mask"][m].numpy()[np.arange(2), action].all()
    if spec.architecture is not None:  # the leaderboard's allowlist reads the registry
        from llmca_data.leaderboard.architectures import ARCHITECTURES, architecture_for_algo

        assert architecture_for_algo(algo) == spec.architecture and algo in ARCHITECTURES[spec.architecture].algos


def test_registry_is_the_one_list() -> None:
    import inspect

    from llmca_data.baselines.policy import ALGO_MODULES
    from llmca_data.baselines.train import ALGOS
    from llmca_data.cli.offline import train_cmd

    # the CLI imports stages lazily, so its help spells the ids out: it must list exactly the registry's
    help_text = inspect.signature(train_cmd).parameters["algo"].default.help
    assert help_text.split(" | ") == list(OFFLINE_ALGOS)

    assert ALGOS == OFFLINE_ALGOS and set(ALGO_MODULES) == set(ALGORITHMS)
    assert "ddqn-online" in ALGORITHMS and "ddqn-online" not in OFFLINE_ALGOS
    with pytest.raises(UnknownAlgorithmError, match="bc, filtered-bc, iql-cql"):
        get_algorithm("qmix", offline=True)
    with pytest.raises(UnknownAlgorithmError, match="train-online"):
        ALGORITHMS["ddqn-online"].train_fn()


@pytest.mark.parametrize("algo", [a for a in OFFLINE_ALGOS if not ALGORITHMS[a].rewards])
def test_reward_source_refused_where_unused(algo: str) -> None:
    assert make_config(algo, reward="team") is not None  # team, the default, is accepted by all
    with pytest.raises(ConfigError, match=r"drop --reward credit_shapley.*iql-cql"):
        make_config(algo, reward="credit_shapley")
    with pytest.raises(ConfigError, match="drop --reward env"):
        make_config(algo, settings={"reward": "env"})
    assert make_config(algo, credit_scale="none") is not None  # none, the default, too
    with pytest.raises(ConfigError, match=r"drop --credit-scale episode, or use one of iql-cql"):
        make_config(algo, credit_scale="episode")
    with pytest.raises(ConfigError, match="drop --credit-scale step"):
        make_config(algo, settings={"credit_scale": "step"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stepz": 10}, r"unknown config key 'stepz'; allowed: steps, "),
        ({"steps": -5}, r"'steps' must be in \[1, inf\)"),
        ({"steps": "10"}, "'steps' must be int"),
        ({"steps": 2.5}, "'steps' must be int"),
        ({"hidden": [0]}, r"'hidden' must be in \[1, 4096\]"),
        ({"hidden": []}, "'hidden' needs at least one value"),
        ({"hidden": 64}, "'hidden' must be tuple"),
        ({"gamma": float("nan")}, "'gamma' must be finite"),
        ({"gamma": 1.5}, r"'gamma' must be in \[0, 1\]"),
        ({"lr": 0}, r"'lr' must be in \(0, inf\)"),
        ({"cql_alpha": True}, "'cql_alpha' must be float"),
        ({"tau": 0.0}, r"'tau' must be in \(0, 1\]"),
        ({"target_period": 0}, "'target_period'"),
        ({"reward_scale": -1.0}, "'reward_scale'"),
        ({"task_input": 3}, "'task_input' must be"),
        ({"credit_scale": "per-episode"}, "'credit_scale' must be one of 'none', 'step', 'episode'"),
        ({"credit_scale": True}, "'credit_scale' must be one of"),
    ],
)
def test_bad_config_keys_name_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("iql-cql", settings=settings)


def test_strict_configs_for_every_family() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'cql_alpha'.*allowed"):
        make_config("bc", settings={"cql_alpha": 0.1})  # BC has no CQL weight
    with pytest.raises(ConfigError, match="unknown config key 'eval_every'"):
        make_config("d3rlpy-cql", settings={"eval_every": 5})
    with pytest.raises(ConfigError, match="'top_fraction' must be in"):
        make_config("filtered-bc", settings={"top_fraction": 0.0})
    with pytest.raises(ConfigError, match="task input"):
        make_config("vdn-cql", task_input="llm-taca")
    # a run's own config.json (with run facts) reads leniently
    assert IQLCQLConfig.from_dict({"algo": "iql-cql", "n_agents": 2, "gamma": 0.5}).gamma == 0.5


@pytest.mark.parametrize("algo", [a for a in OFFLINE_ALGOS if ALGORITHMS[a].rewards])
def test_credit_scale_is_a_config_field_of_the_reward_learners(algo: str) -> None:
    cls = get_algorithm(algo).config_class()
    assert make_config(algo).credit_scale == "none"  # type: ignore[attr-defined]
    assert make_config(algo, credit_scale="episode").credit_scale == "episode"  # type: ignore[attr-defined]
    config = make_config(algo, settings={"credit_scale": "step"})  # e.g. from --config FILE
    assert config.to_dict()["credit_scale"] == "step" and cls.from_dict(config.to_dict()) == config
    assert cls.from_dict({"algo": algo, "reward": "env"}).credit_scale == "none"  # a run saved before the field
    with pytest.raises(ConfigError, match="choose one of none, step, episode"):
        cls(credit_scale="Episode")  # checked on construction too, not only from settings


def test_credit_scale_reaches_the_training_data(lbf_dataset_master: Path, tmp_path: Path) -> None:
    """``team`` rescaled per step or per episode is ``reward_team / N``: the guard's bound halves."""
    bounds = {}
    for scale in ("none", "step", "episode"):
        run = train("iql-cql", lbf_dataset_master, ENV, None, tmp_path / scale, credit_scale=scale,
                    overrides=_small("iql-cql"))  # fmt: skip
        body = json.loads((run / RUN_CONFIG).read_text())
        assert body["credit_scale"] == scale  # provenance
        bounds[scale] = body["q_bound"]
    assert bounds["none"] > 0
    assert bounds["step"] == pytest.approx(bounds["none"] / 2)
    assert bounds["episode"] == pytest.approx(bounds["none"] / 2)


def test_config_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        load_settings(_write(tmp_path / "a.json", "{steps: 1}"))
    with pytest.raises(ConfigError, match="one JSON object"):
        load_settings(_write(tmp_path / "b.json", "[1, 2]"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.json")
    assert load_settings(_write(tmp_path / "c.json", '{"lr": 0.001}')) == {"lr": 0.001}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _episodes(rewards: list[list[float]], n_agents: int = 2) -> dict[str, torch.Tensor]:
    """Transitions of episodes with the given per-step team rewards (every agent gets the team reward)."""
    ep = torch.cat([torch.full((len(r),), i) for i, r in enumerate(rewards)])
    reward = torch.tensor([x for r in rewards for x in r]).unsqueeze(1).expand(-1, n_agents).clone()
    return {"episode_id": ep, "reward": reward}


def test_q_bound_is_the_largest_discounted_return_to_go() -> None:
    data = _episodes([[0.0, 0.0, 1.0], [0.5, 0.0], [0.0, 2.0, 0.0, 0.0]])
    # returns-to-go at gamma 0.5: ep0 0.25, 0.5, 1; ep1 0.5, 0; ep2 1, 2, 0, 0 → the largest is 2
    assert q_bound(data, 0.5) == pytest.approx(2.0)
    assert q_bound(_episodes([[1.0, 1.0, 1.0]]), 0.9) == pytest.approx(1 + 0.9 + 0.81)
    # the return of one episode never leaks into the previous one
    assert q_bound(_episodes([[0.0], [3.0]]), 0.99) == pytest.approx(3.0)
    seq = {"reward": torch.tensor([[[0.0], [1.0], [9.0]]]), "mask": torch.tensor([[True, True, False]])}
    assert q_bound(seq, 0.5) == pytest.approx(1.0)  # padding (9.0) is not part of any return


def _bandit_data(n: int = 128) -> dict[str, torch.Tensor]:
    """One-step, two-agent episodes; reward 1 whatever is done."""
    obs = torch.zeros(n, 2, 3)
    mask = torch.ones(n, 2, 4, dtype=torch.bool)
    return {
        "episode_id": torch.arange(n), "obs": obs, "next_obs": obs.clone(),
        "action": torch.zeros(n, 2, dtype=torch.long),
        "action_mask": mask, "next_action_mask": mask.clone(), "reward": torch.ones(n, 2),
        "terminated": torch.zeros(n, dtype=torch.bool), "truncated": torch.ones(n, dtype=torch.bool),
    }  # fmt: skip


def _ended(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same steps, each ending its episode by termination (no bootstrapping)."""
    n = data["terminated"].shape[0]
    return {**data, "terminated": torch.ones(n, dtype=torch.bool), "truncated": torch.zeros(n, dtype=torch.bool)}


def test_divergence_guard_flags_a_constructed_divergence(tmp_path: Path) -> None:
    """Truncated one-step episodes bootstrap forever: with gamma 0.99 Q heads for 100 while the
    data's largest return-to-go is 1, so the guard must fire; terminated ones must not."""
    config = IQLCQLConfig(steps=1500, batch_size=32, lr=1e-2, hidden=(8,), gamma=0.99, cql_alpha=0.0, tau=1.0,
                          target_period=10, eval_every=100, eval_episodes=0, device="cpu",
                          val_fraction=0.0)  # fmt: skip
    run, _ = fit_iql_cql(_bandit_data(), {"env_id": "bandit", "reward": "env"}, tmp_path / "div", config)
    body = json.loads((run / RUN_CONFIG).read_text())
    assert body["q_bound"] == pytest.approx(1.0) and body["q_limit"] == pytest.approx(DIVERGENCE_FACTOR)
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert all("diverged" in r for r in rows)
    assert all(r["diverged"] == (r["step"] > GUARD_WARMUP * config.steps and abs(r["q_mean"]) > 1.5) for r in rows)
    assert rows[-1]["diverged"] and rows[-1]["q_mean"] > DIVERGENCE_FACTOR  # the final checkpoint left the range
    assert not any(r["diverged"] for r in rows if r["step"] <= GUARD_WARMUP * config.steps)  # not judged yet
    assert run_diverged(run)

    ended = _ended(_bandit_data())
    run, _ = fit_iql_cql(ended, {"env_id": "bandit", "reward": "env"}, tmp_path / "ok", config)
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert not any(r["diverged"] for r in rows) and abs(rows[-1]["q_mean"] - 1.0) < 0.2
    assert not run_diverged(run)


def test_reward_scale_scales_q_and_bound(tmp_path: Path) -> None:
    ended = _ended(_bandit_data())
    config = IQLCQLConfig(steps=600, batch_size=32, lr=1e-2, hidden=(8,), cql_alpha=0.0, reward_scale=10.0,
                          eval_every=100, eval_episodes=0, device="cpu", val_fraction=0.0)  # fmt: skip
    run, _ = fit_iql_cql(ended, {"env_id": "bandit", "reward": "env"}, tmp_path / "scaled", config)
    body = json.loads((run / RUN_CONFIG).read_text())
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert body["q_bound"] == pytest.approx(10.0) and abs(rows[-1]["q_mean"] - 10.0) < 1.0


def test_filtered_bc_keeps_the_best_episodes(lbf_dataset_master: Path, tmp_path: Path) -> None:
    data = {**_episodes([[0.0, 1.0], [0.0], [0.5, 0.0, 0.0], [1.0], [0.0, 0.0], [1.0]]), "x": torch.arange(10)}
    kept, threshold = top_episodes(data, 0.4)  # ceil(0.4 * 6) = 3 episodes: the three with return 1
    assert torch.equal(torch.unique(kept["episode_id"]), torch.tensor([0, 3, 5])) and threshold == 1.0
    assert torch.equal(kept["x"], torch.tensor([0, 1, 6, 9]))  # rows keep their order
    kept, _ = top_episodes(data, 0.3)  # two of them: equal returns go to the shorter episodes
    assert torch.equal(torch.unique(kept["episode_id"]), torch.tensor([3, 5]))
    kept, _ = top_episodes(data, 0.01)  # at least one; equal return and length: the earlier one
    assert torch.equal(torch.unique(kept["episode_id"]), torch.tensor([3]))
    half, threshold = top_episodes(data, 0.6)  # four: the return-0.5 episode joins
    assert torch.equal(torch.unique(half["episode_id"]), torch.tensor([0, 2, 3, 5])) and threshold == 0.5

    settings = {**_small("filtered-bc"), "top_fraction": 0.5}
    run = train("filtered-bc", lbf_dataset_master, ENV, None, tmp_path / "fbc", overrides=settings)
    body = json.loads((run / RUN_CONFIG).read_text())
    assert body["episodes_total"] == 20 and body["kept_episodes"] == 10 and body["top_fraction"] == 0.5
    episodes = OfflineDataset.open(lbf_dataset_master, ENV).episodes()
    returns = np.sort(episodes["return_team"].to_numpy())[::-1] if "return_team" in episodes.columns else None
    if returns is not None:
        assert body["return_threshold"] == pytest.approx(returns[9])
    assert FilteredBCConfig.from_dict(body).top_fraction == 0.5


@pytest.mark.parametrize("algo", ["bc", "filtered-bc"])
def test_recurrent_bc_trains_on_whole_episodes_and_acts_statefully(
    algo: str, lbf_dataset_master: Path, tmp_path: Path
) -> None:
    settings = {**_small(algo), "rnn_hidden": 8, "batch_size": 4}
    run = train(algo, lbf_dataset_master, ENV, None, tmp_path / "gru", overrides=settings)
    body = json.loads((run / RUN_CONFIG).read_text())
    assert body["rnn_hidden"] == 8 and (algo == "bc" or body["kept_episodes"] == 5)
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    policy = load_policy(run)
    tr = OfflineDataset.open(lbf_dataset_master, ENV, ["expert"]).transitions()
    obs, mask = tr["obs"][0].numpy(), tr["action_mask"][0].numpy()
    policy.reset()  # type: ignore[attr-defined]
    first = [policy.act(obs, mask) for _ in range(3)]
    policy.reset()  # type: ignore[attr-defined]
    assert all(np.array_equal(a, b) for a, b in zip(first, [policy.act(obs, mask) for _ in range(3)], strict=True))


def test_qmix_mixer_sees_the_standardised_state() -> None:
    from llmca_data.baselines.qmix_cql import QMixer

    torch.manual_seed(0)
    states = torch.rand(500, 6) * torch.tensor([7.0, 7.0, 3.0, 1.0, 7.0, 0.1])  # [M, S] raw, uneven scales
    fitted = QMixer(2, 6, 8).fit_state(states)
    torch.testing.assert_close(fitted.get_buffer("state_mean"), states.mean(0))
    torch.testing.assert_close(fitted.get_buffer("state_std"), states.std(0))
    assert {"state_mean", "state_std"} <= set(fitted.state_dict())  # saved with the weights (safetensors)
    plain = QMixer(2, 6, 8)
    plain.load_state_dict({k: v for k, v in fitted.state_dict().items() if not k.startswith("state_")}, strict=False)
    q = torch.randn(500, 2)  # [B, N]
    with torch.no_grad():
        standardised = (states - states.mean(0)) / states.std(0)
        torch.testing.assert_close(fitted(q, states), plain(q, standardised))
