"""``llmca leaderboard validate | evaluate | render``: thin commands over ``llmca_data.leaderboard``
(registered on the ``leaderboard`` sub-app by ``llmca_data.cli``).

A rejected submission prints every problem (file, what, fix) on stderr and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llmca_data.cli.output import console, problem, warn
from llmca_data.cli.progress import progress_bar

if TYPE_CHECKING:
    from llmca_data.leaderboard.submission import DatasetIdentity, SubmissionError

DATASET_HELP = "The leaderboard's dataset (directory or Hub repo id); the submission's identity must equal it."


def _expected(dataset: str | None, revision: str | None) -> DatasetIdentity | None:
    from llmca_data.leaderboard.identity import dataset_identity

    return None if dataset is None else dataset_identity(dataset, revision)


def _reject(submission: Path, exc: SubmissionError) -> None:
    for found in exc.problems:
        problem(str(found))
    problem(f"{submission}: REJECTED ({len(exc.problems)} problem(s)); nothing was deserialised")
    raise typer.Exit(1)


def validate_cmd(
    submission: Path = typer.Argument(..., help="Submission directory (submission.json + safetensors checkpoints)."),
    dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP),
    revision: str = typer.Option(None, "--revision", help="Revision of a Hub --dataset (default main)."),
) -> None:
    """Check a submission without deserialising any tensor; exit 1 with every problem found."""
    from llmca_data.leaderboard.submission import SubmissionError
    from llmca_data.leaderboard.validate import validate_submission

    try:
        checked = validate_submission(submission, _expected(dataset, revision))
    except SubmissionError as exc:
        _reject(submission, exc)
        return
    sub = checked.submission
    groups = ", ".join(f"{env}/{tier} ({len(s)} seeds)" for (env, tier), s in sub.groups().items())
    console.print(f"{submission}: valid — {sub.team} / {sub.algorithm} on {sub.dataset}: {groups}")


def evaluate_cmd(
    submission: Path = typer.Argument(..., help="Submission directory."),
    out: Path = typer.Option(..., "--out", help="Results directory (one folder per submission)."),
    episodes: int = typer.Option(
        100, "--episodes", min=1, help="Evaluation episodes per seed (fixed eval seeds; protocol v2: >= 100)."
    ),
    dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP),
    revision: str = typer.Option(None, "--revision", help="Revision of a Hub --dataset (default main)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
) -> None:
    """Validate, rebuild each policy from package code, re-run evaluation and store verified results.

    Each policy acts as its submission says (greedy, or sampled for the BC family).
    """
    import json

    from llmca_data.leaderboard.evaluate import LeaderboardEvalConfig, evaluate_submission
    from llmca_data.leaderboard.submission import SubmissionError

    config = LeaderboardEvalConfig(episodes=episodes, device=device)
    try:
        with progress_bar("evaluate", "seeds") as update:
            path = evaluate_submission(submission, out, config, _expected(dataset, revision), progress=update)
    except SubmissionError as exc:
        _reject(submission, exc)
        return
    body = json.loads(path.read_text())
    for env_id, tiers in body["entries"].items():
        for tier, seeds in tiers.items():
            scores = [s["verified"]["normalized_score"] for s in seeds.values()]
            shown = "—" if None in scores else f"{sum(scores) / len(scores):.2f}"
            flags = sum(len(s["flags"]) for s in seeds.values())
            frozen = sum(s["verified"]["frozen_episodes"] for s in seeds.values())
            console.print(f"{env_id}/{tier} ({body['submission']['act']}): {len(seeds)} seeds, mean normalised score "
                          f"{shown}, {frozen} frozen episode(s), {flags} flag(s)")  # fmt: skip
            for s in seeds.values():
                for flag in s["flags"]:
                    warn(f"flag {s['checkpoint']}: {flag}")
    console.print(f"verified results → {path}")


def render_cmd(
    results_dir: Path = typer.Argument(
        None, help="Results directory from `llmca leaderboard evaluate` (optional with --critic-results)."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write leaderboard.md, index.html and plots/."),
    reps: int = typer.Option(2000, "--reps", min=100, help="Bootstrap replications per interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    baseline: str = typer.Option("bc", "--baseline", help="Algorithm for the probability of improvement."),
    critic_results: Path = typer.Option(
        None, "--critic-results", help="Folder of `llmca critic-bench` results JSONs: also write critics.md."
    ),
    credit_results: Path = typer.Option(
        None,
        "--credit-results",
        help="Results JSON of the credit experiment (benchmarks/offline_credit.py, benchmarks/online.py "
        "--credit-json): also write credit.md.",
    ),
) -> None:
    """Aggregate verified results (IQM, 95% stratified-bootstrap CIs, P(improvement)) into tables and plots.

    With --critic-results DIR, also render the critic leaderboard (critics.md: one row per critic
    and setting of the critic benchmark) into the same --out folder. With --credit-results FILE,
    the credit experiment's table (credit.md: per env, tier and team-reward setting, each arm's IQM
    and its probability of improvement over the team reward and over the env's own split).
    """
    if results_dir is None and critic_results is None and credit_results is None:
        raise typer.BadParameter("give RESULTS_DIR, --critic-results DIR, --credit-results FILE, or some of them")
    if critic_results is not None:
        from llmca_data.leaderboard.critics import render_critics

        console.print(f"critic leaderboard → {render_critics(critic_results, out)}")
    from llmca_data.leaderboard.statistics import StatsConfig

    if credit_results is not None:
        from llmca_data.leaderboard.credit import render_credit

        path = render_credit(credit_results, out, StatsConfig(reps=reps, seed=seed))
        console.print(f"credit experiment table → {path}")
    if results_dir is None:
        return
    from llmca_data.leaderboard.render import render

    result = render(results_dir, out, StatsConfig(reps=reps, seed=seed, baseline=baseline))
    for task in result.tasks:
        best = task.entries[0]
        console.print(f"{task.env_id}/{task.tier}: {len(task.entries)} entries, best {best.name} "
                      f"(IQM {best.iqm:.2f})")  # fmt: skip
    console.print(f"leaderboard → {result.markdown}, {result.html} ({len(result.plots)} plots)")
