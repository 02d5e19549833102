"""``llmca train-online`` and ``llmca plot`` through a local Typer app (the CLI registers the same functions)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from match_env import MatchEnv
from typer.testing import CliRunner

from llmca_data.baselines.curves import aggregate, read_curve
from llmca_data.baselines.evaluate import evaluate_run
from llmca_data.baselines.online import OnlineConfig, train_online
from llmca_data.baselines.policy import RunError
from llmca_data.cli import main
from llmca_data.cli.online import plot_cmd, train_online_cmd
from llmca_data.errors import LlmcaError

app = typer.Typer()
app.command("train-online")(train_online_cmd)
app.command("plot")(plot_cmd)


def test_train_online_command_writes_an_evaluable_run(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"hidden": [16], "learning_starts": 1, "updates_per_step": 0.05}))
    run = tmp_path / "run"
    args = ["train-online", "lbf-8x8-2p-2f-coop", "--critic", "uniform", "--episodes", "4", "--critic-every", "2",
            "--eval-every", "2", "--checkpoint-every", "2", "--eval-episodes", "1", "--device", "cpu",
            "--config", str(overrides), "--out", str(run)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 episodes" in result.output and str(run) in result.output.replace("\n", "")
    assert json.loads((run / "config.json").read_text())["hidden"] == [16]
    assert evaluate_run(run)["algo"] == "ddqn-online"
    help_text = CliRunner().invoke(app, ["train-online", "--help"]).output
    assert "--critic-every" in help_text and "llm-taca" in help_text
    assert "--credit-scale" in help_text and "none | step | episode" in help_text
    assert "--team-reward" in help_text and "true | delayed" in help_text
    delayed = CliRunner().invoke(app, [*args[:3], "shapley", *args[4:-1], str(tmp_path / "d"), "--team-reward",
                                       "delayed"])  # fmt: skip
    assert delayed.exit_code != 0 and "use team, env, shapley-delayed" in str(delayed.exception)
    assert not (tmp_path / "d").exists()
    assert json.loads((run / "config.json").read_text())["credit_scale"] == "none"

    changed = CliRunner().invoke(app, [*args, "--credit-scale", "episode"])  # another reward: refused, run kept
    assert changed.exit_code != 0 and "credit_scale: 'none' → 'episode'" in str(changed.exception)
    changed = CliRunner().invoke(app, [*args, "--normalize-credits"])  # the deprecated alias of step
    assert changed.exit_code != 0 and "credit_scale: 'none' → 'step'" in str(changed.exception)
    bad = CliRunner().invoke(app, [*args, "--credit-scale", "per-episode"])
    assert bad.exit_code != 0 and "'credit_scale' must be one of 'none', 'step', 'episode'" in str(bad.exception)
    both = CliRunner().invoke(app, [*args, "--normalize-credits", "--credit-scale", "episode"])
    assert both.exit_code == 2 and "drop one of it and --credit-scale episode" in both.output
    config = json.loads((run / "config.json").read_text())
    del config["credit_scale"]  # a run written before the field existed: read with its default
    (run / "config.json").write_text(json.dumps(config))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output


def test_an_old_run_with_normalize_credits_resumes_as_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = {"critic": "uniform", "episodes": 4, "critic_every": 2, "eval_every": 2, "checkpoint_every": 2,
                "eval_episodes": 1, "device": "cpu", "hidden": (16,), "learning_starts": 1}  # fmt: skip
    train_online(OnlineConfig("match-2a", credit_scale="step", **settings), run, env_factory=MatchEnv)
    config = json.loads((run / "config.json").read_text())
    del config["credit_scale"]
    (run / "config.json").write_text(json.dumps({**config, "normalize_credits": True}))  # as older versions wrote it
    assert OnlineConfig.from_dict(json.loads((run / "config.json").read_text())).credit_scale == "step"
    more = replace(OnlineConfig("match-2a", credit_scale="step", **settings), episodes=6)
    assert train_online(more, run, env_factory=MatchEnv).episodes == 6  # resumed: the same config
    (run / "config.json").write_text(json.dumps({**config, "normalize_credits": True}))
    with pytest.raises(RunError, match="credit_scale: 'step' → 'episode'"):
        train_online(replace(more, credit_scale="episode"), run, env_factory=MatchEnv)


def test_plot_two_critics_two_seeds(tmp_path: Path) -> None:
    runs = []
    for critic, scale in (("team", "none"), ("uniform", "none"), ("uniform", "step")):
        for seed in (0, 1):
            run = tmp_path / f"{critic}-{scale}-{seed}"
            config = OnlineConfig("match-2a", critic=critic, seed=seed, episodes=8, critic_every=2, eval_every=2,
                                  checkpoint_every=8, eval_episodes=2, device="cpu", hidden=(16,), learning_starts=8,
                                  updates_per_step=0.5, credit_scale=scale)  # fmt: skip
            train_online(config, run, env_factory=MatchEnv)
            runs.append(str(run))
    groups = aggregate([Path(r) for r in runs], "eval_return", reps=200)
    assert [(g.critic, g.seeds, g.episodes.tolist()) for g in groups] == [
        ("team", 2, [2, 4, 6, 8]),
        ("uniform", 2, [2, 4, 6, 8]),
        ("uniform+step", 2, [2, 4, 6, 8]),
    ]
    assert all((g.low <= g.iqm + 1e-9).all() and (g.iqm <= g.high + 1e-9).all() for g in groups)
    out = tmp_path / "plots" / "curves.png"
    result = CliRunner().invoke(app, ["plot", *runs, "--out", str(out), "--metric", "eval_return", "--reps", "200"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({}, "uniform"),  # written before credits could be rescaled
        ({"normalize_credits": False}, "uniform"),
        ({"normalize_credits": True}, "uniform+step"),  # the older key: step rescaling
        ({"credit_scale": "none"}, "uniform"),
        ({"credit_scale": "step"}, "uniform+step"),
        ({"credit_scale": "episode"}, "uniform+episode"),
    ],
)
def test_curve_labels_name_the_credit_scale(tmp_path: Path, config: dict[str, object], label: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"env_id": "match-2a", "critic": "uniform", **config}))
    (tmp_path / "curve.jsonl").write_text(json.dumps({"episodes": 2, "eval_return": 0.5}) + "\n")
    assert read_curve(tmp_path, "eval_return") == ("match-2a", label, {2: 0.5})


@pytest.mark.parametrize("case", ["offline run", "empty folder", "missing", "bad metric"])
def test_plot_of_a_run_that_is_not_an_online_run_says_what_to_do(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    if case == "offline run":  # what `llmca train` writes: a config, weights, metrics; no curve
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"algo": "bc", "env_id": "lbf-8x8-2p-2f-coop"}))
        (run / "metrics.jsonl").write_text("{}\n")
    elif case == "empty folder":
        run.mkdir()
    elif case == "bad metric":
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"env_id": "match-2a", "critic": "team"}))
        (run / "curve.jsonl").write_text(json.dumps({"episodes": 2, "eval_return": 1.0, "eval_score": None}) + "\n")
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(app, ["plot", str(run), "--out", str(out)])
    assert isinstance(result.exception, LlmcaError), result.exception
    expected = "--metric eval_return" if case == "bad metric" else "llmca train-online"
    assert str(run) in str(result.exception) and expected in str(result.exception)

    with pytest.raises(SystemExit) as exit_info:  # the console script: one line, no traceback
        main(["plot", str(run), "--out", str(out)])
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err
    assert not out.exists()
