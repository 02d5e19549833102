"""``llmca train-online`` and ``llmca plot`` through a local Typer app (the CLI registers the same functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from match_env import MatchEnv
from typer.testing import CliRunner

from llmca_data.baselines.curves import aggregate
from llmca_data.baselines.evaluate import evaluate_run
from llmca_data.baselines.online import OnlineConfig, train_online
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
    assert "--critic-every" in help_text and "llm-taca" in help_text and "--normalize-credits" in help_text

    changed = CliRunner().invoke(app, [*args, "--normalize-credits"])  # another reward: refused, run kept
    assert changed.exit_code != 0 and "normalize_credits: False → True" in str(changed.exception)
    config = json.loads((run / "config.json").read_text())
    del config["normalize_credits"]  # a run written before the field existed: read with its default
    (run / "config.json").write_text(json.dumps(config))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output


def test_plot_two_critics_two_seeds(tmp_path: Path) -> None:
    runs = []
    for critic, normalize in (("team", False), ("uniform", False), ("uniform", True)):
        for seed in (0, 1):
            run = tmp_path / f"{critic}-{normalize}-{seed}"
            config = OnlineConfig("match-2a", critic=critic, seed=seed, episodes=8, critic_every=2, eval_every=2,
                                  checkpoint_every=8, eval_episodes=2, device="cpu", hidden=(16,), learning_starts=8,
                                  updates_per_step=0.5, normalize_credits=normalize)  # fmt: skip
            train_online(config, run, env_factory=MatchEnv)
            runs.append(str(run))
    groups = aggregate([Path(r) for r in runs], "eval_return", reps=200)
    assert [(g.critic, g.seeds, g.episodes.tolist()) for g in groups] == [
        ("team", 2, [2, 4, 6, 8]),
        ("uniform", 2, [2, 4, 6, 8]),
        ("uniform+norm", 2, [2, 4, 6, 8]),
    ]
    assert all((g.low <= g.iqm + 1e-9).all() and (g.iqm <= g.high + 1e-9).all() for g in groups)
    out = tmp_path / "plots" / "curves.png"
    result = CliRunner().invoke(app, ["plot", *runs, "--out", str(out), "--metric", "eval_return", "--reps", "200"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
