"""The ``llmca`` command line: parse, call the library, print.

Every command imports its stage lazily so ``llmca --help`` stays fast. Library errors
(``LlmcaError``) are printed as one line that says how to fix them, with exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from llmca_data.cli.progress import progress_bar

app = typer.Typer(
    help="llmca-data: collect multi-agent rollouts, annotate them with credit critics, build, "
    "validate and publish the dataset, and train offline MARL baselines on it.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, files) gets 120 columns instead of rich's 80, so tables stay readable.
_WIDTH = None if sys.stdout.isatty() else 120
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=_WIDTH)


@app.command("envs")
def envs_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the environments with their agents, actions, observation and state sizes."""
    from llmca_data.envs import CONTRACT_ENV_IDS, EnvId, env_spec

    rows: list[dict[str, Any]] = []
    for env_id in CONTRACT_ENV_IDS:
        spec = env_spec(env_id)
        wraps = EnvId.parse(env_id).gym_id or "ours (numpy, vectorised)"
        rows.append(
            {
                "env_id": env_id,
                "wraps": wraps,
                "agents": spec.n_agents,
                "actions": spec.n_actions,
                "action_names": list(spec.action_names),
                "obs_dim": spec.obs_dim,
                "state_dim": spec.state_dim,
                "max_steps": spec.max_steps,
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("env id", "wraps", "agents", "actions", "obs dim", "state dim", "max steps")
    for r in rows:
        table.add_row(
            r["env_id"], r["wraps"], str(r["agents"]), ", ".join(r["action_names"]), str(r["obs_dim"]),
            str(r["state_dim"]), str(r["max_steps"]),
        )  # fmt: skip
    console.print(table)


@app.command("collect")
def collect_cmd(
    env_id: str = typer.Argument(..., help="Env id, e.g. lbf-8x8-2p-2f (see `llmca envs`)."),
    tier: str = typer.Option(..., "--tier", help="expert | medium | random | replay"),
    episodes: int = typer.Option(..., "--episodes", min=1, help="Episodes wanted for this env, tier and seed."),
    seed: int = typer.Option(0, "--seed", help="Base seed; episode i uses a seed derived from (seed, i)."),
    out: Path = typer.Option(..., "--out", help="Dataset directory (created if missing, appended to if not)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes playing episodes in parallel."),
) -> None:
    """Play episodes of a tier's behaviour policy and add them to a dataset directory.

    Deterministic (same arguments, same rows), resumable (rerun after a kill to finish), and
    idempotent (episodes already in the dataset are not played again).
    """
    from llmca_data.collect import CollectConfig, collect

    config = CollectConfig(env_id=env_id, tier=tier, episodes=episodes, seed=seed, workers=workers)
    with progress_bar(f"collect {env_id} {tier}", "episodes") as update:
        result = collect(out, config, progress=update)
    console.print(
        f"{env_id} {tier}: {result.new_episodes} new episodes ({result.new_steps} steps), "
        f"{result.skipped_episodes} already present, {result.seconds:.1f} s → {out}"
    )


@app.command("annotate")
def annotate_cmd(
    directory: Path = typer.Argument(..., help="Dataset directory (from `llmca collect` or `llmca download`)."),
    critic: str = typer.Option(
        None,
        "--critic",
        help="llm-mca | llm-taca | uniform | shapley | counterfactual (with --horizon H: counterfactual-hH).",
    ),
    horizon: int = typer.Option(1, "--horizon", min=1, help="Counterfactual window: credit steps that lead to reward."),
    gamma: float = typer.Option(0.99, "--gamma", help="Discount over the counterfactual window."),
    samples: int = typer.Option(256, "--samples", help="Shapley: random agent orders when N > 4 (exact up to 4)."),
    env: list[str] = typer.Option([], "--env", help="Only this env (repeatable)."),
    tier: list[str] = typer.Option([], "--tier", help="Only this tier (repeatable)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes computing credits in parallel."),
    force: bool = typer.Option(False, "--force", help="Recompute episodes that already have these credits."),
    from_file: Path = typer.Option(None, "--from-file", help="Import credits: Parquet with episode_id, t, credit."),
    critic_id: str = typer.Option(None, "--critic-id", help="Critic id for --from-file credits, e.g. my-critic."),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N episodes per env (episode-id order)."),
    base_url: str = typer.Option("", "--base-url", help="LLM: OpenAI-compatible endpoint; default starts a local one."),
    model: str = typer.Option("", "--model", help="LLM: model name (required with --base-url)."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="LLM: requests in flight."),
    episodes_per_prompt: int = typer.Option(1, "--episodes-per-prompt", min=1, help="LLM: batch mode E."),
    response_format: str = typer.Option(
        "grammar", "--response-format", help="LLM: grammar | json_object | json_schema | none."
    ),
    max_tokens: int = typer.Option(0, "--max-tokens", min=0, help="LLM: reply budget (0 scales with T × N)."),
    temperature: float = typer.Option(0.0, "--temperature", help="LLM: sampling temperature."),
    max_window: int = typer.Option(30, "--max-window", min=2, help="LLM: most timesteps per request."),
    team_reward: str = typer.Option("true", "--team-reward", help="LLM stress test: true | delayed | noisy."),
    noise_std: float = typer.Option(0.0, "--noise-std", help="LLM: std of --team-reward noisy."),
    timeout: float = typer.Option(300.0, "--timeout", help="LLM: seconds per request."),
    max_cost: float = typer.Option(0.0, "--max-cost", min=0.0, help="LLM: stop before spending more USD (0: no cap)."),
    price_in: float = typer.Option(0.0, "--price-in", help="LLM: USD per 1M prompt tokens."),
    price_out: float = typer.Option(0.0, "--price-out", help="LLM: USD per 1M output tokens."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="LLM: render every prompt, count requests and cost, send nothing."
    ),
) -> None:
    """Add a critic's per-agent, per-step credits (column `credit_<critic>`) to every step of a dataset.

    Idempotent: a rerun only retries failed episodes; --force recomputes. Re-simulating critics
    replay each stored episode and refuse ones the installed env does not reproduce.
    """
    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.critic import make_critic
    from llmca_data.annotation.imported import ImportedCritic

    if (from_file is None) == (critic is None) or (from_file is not None) != (critic_id is not None):
        raise typer.BadParameter("give either --critic ID, or --from-file FILE with --critic-id NAME")
    if from_file is not None:
        chosen: Any = ImportedCritic(critic_id, from_file)
        chosen.check_coverage(directory, tuple(env), tuple(tier))
    elif critic in ("llm-mca", "llm-taca"):
        from llmca_data.annotation.llm.critic import LLMConfig, LLMCritic
        from llmca_data.annotation.llm.critic import dry_run as llm_dry_run

        config = LLMConfig(
            critic=critic, base_url=base_url, model=model, response_format=response_format, temperature=temperature,
            max_tokens=max_tokens, episodes_per_prompt=episodes_per_prompt, max_window=max_window,
            team_reward=team_reward, noise_std=noise_std, concurrency=concurrency, timeout_s=timeout,
            max_cost=max_cost, price_in=price_in, price_out=price_out,
        )  # fmt: skip
        chosen = LLMCritic(config)
        if dry_run:
            totals = llm_dry_run(directory, chosen, tuple(env), tuple(tier), limit, force)
            console.print_json(json.dumps(totals))
            return
    else:
        if horizon > 1 and critic == "counterfactual":
            critic = f"counterfactual-h{horizon}"
        chosen = make_critic(critic, horizon=horizon, gamma=gamma, samples=samples)
    with progress_bar(f"annotate {chosen.critic_id}", "episodes") as update:
        result = annotate(
            directory,
            chosen,
            envs=tuple(env),
            tiers=tuple(tier),
            workers=workers,
            force=force,
            limit=limit,
            progress=update,
        )
    console.print(
        f"{chosen.critic_id}: {result.episodes} episodes annotated ({result.steps} steps, {result.failed} failed), "
        f"{result.skipped} already done, {len(result.shards)} shards rewritten, {result.seconds:.1f} s"
    )
    if result.tokens_in or result.tokens_out:
        console.print(
            f"tokens: {result.tokens_in} in, {result.tokens_out} out; cost {result.cost_usd:.4f} USD; "
            f"{result.seconds / max(1, result.episodes):.1f} s per episode"
        )
    if result.failed:
        err_console.print(
            "[yellow]failed episodes have NaN credits; see their annotations rows (status, error)[/yellow]"
        )


def critic_eval_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The critic-eval rows as a rich table (None prints as —)."""

    def fmt(value: Any, spec: str = ".3f") -> str:
        return "—" if value is None else format(value, spec)

    table = Table(
        "env", "tier", "rewarded", "sign", "top agent", "spearman", "MAE", "ep. total r", "coverage", title=title,
    )  # fmt: skip
    for r in rows:
        table.add_row(
            r["env_id"], r["tier"], str(r["rewarded_steps"]), fmt(r["sign_agreement"]), fmt(r["top_agent_accuracy"]),
            fmt(r["spearman"]), fmt(r["mae_scaled"]), fmt(r["episode_total_pearson"]), fmt(r["coverage"], ".0%"),
        )  # fmt: skip
    return table


@app.command("critic-eval")
def critic_eval_cmd(
    directory: Path = typer.Argument(..., help="Dataset directory with both critics' credit columns."),
    critic: str = typer.Option(..., "--critic", help="Critic to score, e.g. llm-mca or uniform."),
    reference: str = typer.Option("shapley", "--reference", help="Reference critic, e.g. shapley, counterfactual-h5."),
    env: list[str] = typer.Option([], "--env", help="Only this env (repeatable)."),
    tier: list[str] = typer.Option([], "--tier", help="Only this tier (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
) -> None:
    """Score a critic's credits against a reference critic, per env and tier and overall.

    Metrics (defined in llmca_data.annotation.metrics): sign agreement and top-agent accuracy on
    rewarded steps, Spearman (N >= 3), MAE after scaling to the reference's sum, Pearson of
    per-agent episode totals, coverage. NaN (failed) credits are excluded and counted.
    """
    from llmca_data.annotation.evaluate import critic_eval

    rows = critic_eval(directory, critic, reference, envs=env or None, tiers=tier or None)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    console.print(critic_eval_table(rows, f"{critic} vs {reference}"))


@app.command("serve-llm")
def serve_llm_cmd(
    port: int = typer.Option(8080, "--port", help="Port on 127.0.0.1 (0 picks a free one)."),
    model_path: str = typer.Option("", "--model-path", help="A GGUF file; default: the bundled SmolLM2-135M."),
    n_ctx: int = typer.Option(8192, "--n-ctx", help="Context length in tokens."),
    threads: int = typer.Option(2, "--threads", help="CPU threads."),
) -> None:
    """Run the embedded llama.cpp server in the foreground (Ctrl-C stops it).

    Then annotate with `--base-url http://127.0.0.1:PORT/v1 --model smollm2-135m-instruct`
    to reuse one server across several `llmca annotate` runs.
    """
    import time

    from llmca_data.annotation.llm.server import LocalLLMServer, LocalServerConfig

    config = LocalServerConfig(model_path=model_path, n_ctx=n_ctx, n_threads=threads, port=port)
    server = LocalLLMServer(config)
    with server:
        console.print(f"serving {server.model} at {server.base_url} ({json.dumps(server.provenance())})")
        console.print(f"use: llmca annotate DIR --critic llm-mca --base-url {server.base_url} --model {server.model}")
        try:
            while server.running():
                time.sleep(1.0)  # the server runs in a child process; this only keeps the foreground alive
        except KeyboardInterrupt:
            console.print("stopping")
    raise typer.Exit(0)


def card_critic_eval(directory: Path, reference: str) -> list[dict[str, Any]]:
    """Every critic of the dataset scored against ``reference`` (rows for the card); [] without it."""
    from llmca_data.annotation.evaluate import critic_eval
    from llmca_data.info import load_info

    critics = list(load_info(directory).get("critics", {}))
    rows: list[dict[str, Any]] = []
    if reference in critics:
        for critic in critics:
            if critic != reference:
                scores = critic_eval(directory, critic, reference)
                rows += [{**r, "critic": critic, "reference": reference} for r in scores]
    return rows


@app.command("build")
def build_cmd(
    directory: Path = typer.Argument(..., help="Dataset directory."),
    repo_id: str = typer.Option("llmca/annotated", "--repo-id", help="Hub repo id used in the card's examples."),
    reference: str = typer.Option("shapley", "--reference", help="Reference critic of the card's critic-eval table."),
) -> None:
    """Render README.md (the dataset card with its `configs:`), statistics, plots and meta/info.json.

    Afterwards `datasets.load_dataset(DIR or REPO, "<env_id>", split="<tier>")` works. Every critic
    present is scored against --reference (when that critic is present) in the card.
    """
    from llmca_data.build import BuildConfig, build

    rows = card_critic_eval(directory, reference)
    with progress_bar("build", "steps") as update:
        result = build(directory, BuildConfig(repo_id=repo_id), critic_eval=rows, progress=update)
    padded = f", {len(result.padded_shards)} shards given missing critic columns" if result.padded_shards else ""
    console.print(f"built {directory}: {len(result.files)} files written{padded}, {result.seconds:.1f} s")
    for name in result.files:
        console.print(f"  {name}")


@app.command("publish")
def publish_cmd(
    directory: Path = typer.Argument(..., help="A validated dataset directory (run `llmca build` first)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repo, e.g. my-org/llmca-annotated."),
    revision: str = typer.Option("main", "--revision", help="Branch to commit to."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List added / changed / deleted files; write nothing."),
) -> None:
    """Publish the dataset to the Hugging Face Hub in one atomic commit (token: HF_TOKEN or your login).

    Validates first; creates the repo if missing; uploads only files whose content changed; a
    concurrent change to the branch makes the commit fail with a clear message. Honours HF_ENDPOINT.
    """
    from llmca_data.hub import publish

    result = publish(directory, repo_id, revision=revision, private=private, dry_run=dry_run)
    for kind, changes in (("add", result.added), ("change", result.changed), ("delete", result.deleted)):
        for change in changes:
            console.print(f"  {kind:<6} {change.path} ({change.bytes} bytes)")
    if result.dry_run:
        console.print(f"dry run: {repo_id}@{revision} would get {result.upload_bytes} bytes; nothing written")
    elif result.committed:
        console.print(f"published {repo_id}@{revision}: commit {result.commit_sha} (tag {result.tag})")
    else:
        console.print(f"{repo_id}@{revision} is up to date: no commit")


@app.command("download")
def download_cmd(
    repo_id: str = typer.Argument(..., help="Hub dataset repo, e.g. llmca/annotated."),
    out: Path = typer.Option(..., "--out", help="An empty directory for the dataset."),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit to pin."),
) -> None:
    """Download a pinned revision and verify every file's sha256 against meta/manifest.json."""
    from llmca_data.hub import download

    result = download(repo_id, out, revision=revision)
    console.print(
        f"downloaded {repo_id}@{revision} (commit {result.commit_sha}): {len(result.files)} files, "
        f"{result.bytes / 1e6:.1f} MB, all sha256 verified → {out}"
    )


@app.command("validate")
def validate_cmd(directory: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Check files, hashes, page checksums, schema and invariants; exit 1 on any problem."""
    from llmca_data.validate import validate

    with progress_bar("validate", "files") as update:
        report = validate(directory, progress=update)
    for problem in report.problems:
        err_console.print(f"[red]problem[/red] {problem}", highlight=False)
    mb = report.bytes / 1e6
    status = "valid" if report.ok else f"INVALID ({len(report.problems)} problems)"
    console.print(
        f"{directory}: {status}; {report.files} files, {report.rows} rows, {mb:.1f} MB, {report.seconds:.1f} s"
    )
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    from llmca_data.errors import LlmcaError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except LlmcaError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None


from llmca_data.cli import pipeline as _pipeline  # noqa: E402,F401  (registers `llmca pipeline`)
from llmca_data.cli.leaderboard import leaderboard_app  # noqa: E402

app.add_typer(leaderboard_app, name="leaderboard")
from llmca_data.cli.online import plot_cmd, train_online_cmd  # noqa: E402

app.command("train-online")(train_online_cmd)
app.command("plot")(plot_cmd)
from llmca_data.cli.offline import evaluate_cmd, train_cmd  # noqa: E402

app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
