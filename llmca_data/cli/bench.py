"""``llmca critic-bench``: score any critic on the fixed, versioned critic benchmark.

Input: command-line options. Output: the results JSON (``llmca_data.annotation.bench``) and a
compact table. The stages are imported lazily so ``llmca --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from llmca_data.cli.output import console, warn
from llmca_data.cli.progress import progress_bar

from .llm_options import BASE_URL, LOCAL_MODEL, MODEL, RESPONSE_FORMAT, TRANSPORT, show_batch_status

_SETTINGS = {"plain": ("plain",), "delayed": ("delayed",), "both": ("plain", "delayed")}


def critic_bench_cmd(
    critic: str = typer.Option(
        None,
        "--critic",
        help="A registry critic id (llmca annotate --help), evidence-split or random-share; "
        "with --credits, the id to score the imported credits under.",
    ),
    setting: str = typer.Option(
        None, "--setting", help="plain | delayed | both (default both; imported credits: say which one)."
    ),
    credits: Path = typer.Option(
        None,
        "--credits",
        help="Score credits computed elsewhere: Parquet with episode_id, t, credit (list of N).",
    ),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N episodes per env (tiers in turn)."),
    out: Path = typer.Option(
        None, "--out", help="Results JSON (default: critic-bench/CRITIC[-MODEL][-SETTING].json in this folder)."
    ),
    bench_dir: Path = typer.Option(
        None, "--bench-dir", help="The bench set's folder (default: $LLMCA_BENCH_DIR or the user cache dir)."
    ),
    where: bool = typer.Option(False, "--where", help="Print the bench set's folder (building it if needed); exit."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes for the references while building the set."),
    base_url: str = BASE_URL,
    model: str = MODEL,
    local_model: str = LOCAL_MODEL,
    response_format: str = RESPONSE_FORMAT,
    transport_mode: str = TRANSPORT,
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="LLM: requests in flight."),
    max_window: int = typer.Option(30, "--max-window", min=2, help="LLM: most timesteps per request."),
    max_tokens: int = typer.Option(0, "--max-tokens", min=0, help="LLM: reply budget (0 scales with T × N)."),
    temperature: float = typer.Option(0.0, "--temperature", help="LLM: sampling temperature."),
    timeout: float = typer.Option(300.0, "--timeout", help="LLM: seconds per attempt, end to end."),
    max_cost: float = typer.Option(0.0, "--max-cost", min=0.0, help="LLM: stop before spending more USD (0: no cap)."),
    price_in: float = typer.Option(0.0, "--price-in", help="LLM: USD per 1M prompt tokens (reports dollars)."),
    price_out: float = typer.Option(0.0, "--price-out", help="LLM: USD per 1M output tokens."),
) -> None:
    """Score a critic on the fixed, versioned **critic benchmark** and write a results JSON.

    **The set** (version 1): expert and medium episodes of lbf-8x8-2p-2f, lbf-10x10-3p-3f,
    rware-tiny-2ag (time limit 100 steps) and spaceworld-10x10-3a, fixed seeds, at least 100
    rewarded steps per env, annotated with the **references** shapley, counterfactual and
    counterfactual-h5. It is an ordinary llmca dataset, built on first use (about 40 s on two
    cores) and cached in the user cache dir: `$LLMCA_CACHE_DIR/critic-bench/v1`, else the
    platform's (e.g. `~/.cache/llmca-data/critic-bench/v1`); `--where` prints the folder,
    `--bench-dir` or $LLMCA_BENCH_DIR moves it. To score credits computed elsewhere, read the episodes there
    and pass `--credits FILE.parquet --critic my-id --setting plain`.

    **Settings**: `plain`, the critic sees the true team reward; `delayed`, it sees the
    team reward only at the episode's last step. LLM critics get the delayed reward in their
    prompt (id `llm-mca-delayed`, ...); critics without the env (uniform, env, evidence-split,
    random-share, imported) get the episode with `reward_team` delayed and each agent's episode
    total at the last step. References and "rewarded steps" always use the true reward.

    **Oracle rows**: re-simulating critics (shapley, counterfactual*) replay the true episode
    and query the simulator; they cannot be blinded and are marked `oracle`.

    Per env and overall, against each reference: Spearman, sign agreement, top-agent accuracy,
    scaled MAE, per-agent episode-total Pearson, step Pearson (every step, rewarded or not: the
    one that sees credit placed before a reward); validity (share of episodes ok/repaired;
    failed episodes are never scored), tokens, critic seconds and dollars (with prices).
    """
    from llmca_data.annotation.bench import BenchRun, default_results_path, score_bench, write_results
    from llmca_data.annotation.bench_set import default_bench_dir, ensure_bench
    from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
    from llmca_data.annotation.registry import CriticOptions

    root = bench_dir if bench_dir is not None else default_bench_dir()
    with progress_bar("build critic-bench set", "episodes") as update:
        bench = ensure_bench(root, None, progress=update, workers=workers)
    if where:
        console.print(str(bench.root))
        return
    if critic is None:
        raise typer.BadParameter("give --critic ID (or --where to print the bench set's folder)")
    if setting is not None and setting not in _SETTINGS:
        raise typer.BadParameter(f"--setting must be plain, delayed or both, got {setting!r}")
    if credits is not None and setting in (None, "both"):
        raise typer.BadParameter("imported credits were computed for one setting: give --setting plain or delayed")
    show_batch_status(transport_mode)
    transport = TransportConfig(
        concurrency=concurrency, timeout_s=timeout, price_in=price_in, price_out=price_out, mode=transport_mode
    )
    llm = LLMConfig(base_url=base_url, model=model, local_model=local_model, response_format=response_format,
                    temperature=temperature, max_tokens=max_tokens, max_window=max_window, max_cost=max_cost,
                    transport=transport)  # fmt: skip
    run = BenchRun(critic, _SETTINGS[setting or "both"], limit, CriticOptions(llm=llm), credits)
    with progress_bar(f"critic-bench {critic}", "episodes") as update:
        results = score_bench(bench, run, progress=update)
    path = write_results(out or default_results_path(critic, results["model"], run.settings), results)
    for table in bench_tables(results):
        console.print(table)
    console.print(f"bench set {bench.root} (version {results['bench_version']}); results → {path}")
    if any(r["valid_episodes"] < r["episodes"] for s in results["settings"] for r in s["rows"]):
        warn("some episodes failed (validity < 100%); they are left out of every agreement metric")


def bench_tables(results: dict[str, Any]) -> list[Table]:
    """One compact table per setting of a results document: rows per env and reference (None prints as —);
    the token and dollar columns only when the critic reported any."""

    def fmt(value: Any, spec: str = ".3f") -> str:
        return "—" if value is None else format(value, spec)

    tables = []
    for entry in results["settings"]:
        rows = entry["rows"]
        tokens = any(r["tokens_in"] or r["tokens_out"] for r in rows)
        dollars = any(r["cost_usd"] is not None for r in rows)
        columns = ["env", "reference", "valid", "sign", "top", "spearman", "MAE", "ep. r", "step r", "s/ep"]
        columns += ["tok/ep"] * tokens + ["$"] * dollars
        oracle = " (oracle: re-simulates the true episode)" if entry["oracle"] else ""
        table = Table(*columns, title=f"{entry['critic_id']} · {entry['setting']}{oracle}")
        for row in rows:
            per = max(1, row["episodes"])
            for k, (ref, s) in enumerate(row["scores"].items()):
                first = k == 0
                cells = [row["env_id"] if first else "", ref, fmt(row["validity"], ".0%") if first else "",
                         fmt(s["sign_agreement"]), fmt(s["top_agent_accuracy"]), fmt(s["spearman"]),
                         fmt(s["mae_scaled"]), fmt(s["episode_total_pearson"]), fmt(s["step_pearson"]),
                         f"{row['seconds'] / per:.3f}" if first else ""]  # fmt: skip
                cells += [f"{(row['tokens_in'] + row['tokens_out']) / per:.0f}" if first else ""] * tokens
                cells += [fmt(row["cost_usd"], ".2f") if first else ""] * dollars
                table.add_row(*cells)
        tables.append(table)
    return tables
