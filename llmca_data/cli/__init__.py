"""The ``llmca`` command line: parse, call the library, print.

Input: ``sys.argv``. Output: the command's printout and exit code. Every command is a plain
function in one of ``cli/dataset.py``, ``cli/bench.py``, ``cli/offline.py``, ``cli/online.py``,
``cli/leaderboard.py`` or ``cli/pipeline.py``, registered here, in one table; each imports
its stage lazily so ``llmca --help`` stays fast.

Errors: an expected failure (``LlmcaError``, a missing optional extra, an unusable path) is
printed as one line that says what went wrong and how to fix it, with exit code 2 and no
traceback; ``--debug`` (anywhere on the command line) or ``LLMCA_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from llmca_data.cli import bench, dataset, leaderboard, offline, online, pipeline
from llmca_data.cli.output import console, err_console, error, os_error_message

__all__ = ["app", "console", "err_console", "main"]

app = typer.Typer(
    help="llmca-data: collect multi-agent rollouts, annotate them with credit critics, build, "
    "validate and publish the dataset, and train offline MARL baselines on it. "
    "Add --debug (or set LLMCA_DEBUG=1) to see the traceback of an error.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
)
leaderboard_app = typer.Typer(
    help="Validate submissions safely, re-evaluate them, and render the leaderboard from verified results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS: tuple[tuple[typer.Typer, str, Callable[..., Any]], ...] = (
    (app, "envs", dataset.envs_cmd),
    (app, "collect", dataset.collect_cmd),
    (app, "annotate", dataset.annotate_cmd),
    (app, "critic-eval", dataset.critic_eval_cmd),
    (app, "critic-bench", bench.critic_bench_cmd),
    (app, "serve-llm", dataset.serve_llm_cmd),
    (app, "build", dataset.build_cmd),
    (app, "publish", dataset.publish_cmd),
    (app, "download", dataset.download_cmd),
    (app, "validate", dataset.validate_cmd),
    (app, "train", offline.train_cmd),
    (app, "evaluate", offline.evaluate_cmd),
    (app, "train-online", online.train_online_cmd),
    (app, "plot", online.plot_cmd),
    (app, "pipeline", pipeline.pipeline_cmd),
    (leaderboard_app, "validate", leaderboard.validate_cmd),
    (leaderboard_app, "evaluate", leaderboard.evaluate_cmd),
    (leaderboard_app, "render", leaderboard.render_cmd),
)
for _group, _name, _command in COMMANDS:
    _group.command(_name)(_command)
app.add_typer(leaderboard_app, name="leaderboard")


def _failure(exc: BaseException) -> str | None:
    """The one-line message of an expected failure; None for a bug (which keeps its traceback)."""
    from llmca_data.errors import LlmcaError
    from llmca_data.extras import missing_extra

    if isinstance(exc, LlmcaError):
        return str(exc)
    if isinstance(exc, ImportError):
        extra = missing_extra(exc)
        return None if extra is None else str(extra)
    if isinstance(exc, OSError):
        return os_error_message(exc)
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the command; expected failures exit 2 with one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LLMCA_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=args, prog_name="llmca")
    except KeyboardInterrupt:
        error("interrupted; rerun the same command to resume where it stopped")
        raise SystemExit(130) from None
    except Exception as exc:
        message = _failure(exc)
        if message is None or debug:
            raise
        error(message)
        raise SystemExit(2) from None
