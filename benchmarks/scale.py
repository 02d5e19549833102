"""Scale-out costs, measured in one run: Ray against the local process pool, and the Batch API
transport against interactive requests.

1. Ray ÷ local: steps/s of ``collect`` (rware-tiny-2ag random) and of a Shapley ``annotate`` on the
   same data, with 2 Ray workers (a fresh local Ray, started and stopped by the command, as a user
   gets it) against 2 local worker processes, at several sizes. Ray's start-up counts against it;
   the script reports the size at which the ratio crosses 0.8 (or that it does not here), and the
   per-call start-up seconds (a run of zero new episodes).
2. Batch overhead: seconds per request of the LLM critic through ``--transport batch`` against the
   Files/Batches fake (``tests/fake_batches.py``: upload, create, poll, download, parse) minus the
   same requests through the interactive path against the chat fake (``tests/fake_openai.py``),
   both answering at once from the request itself: what the transport adds, not model time.

Usage: ``python benchmarks/scale.py [--sizes 8 32 128] [--requests 40]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
from llmca_data.annotation.llm.critic import LLMCritic
from llmca_data.annotation.registry import make_critic
from llmca_data.collect import CollectConfig, collect
from llmca_data.dataset import Dataset
from llmca_data.executor import open_executor

ENV = "rware-tiny-2ag"
FAKES = Path(__file__).resolve().parent.parent / "tests" / "fake_batches.py"
"""Serves the Files/Batches fake and the chat fake in a child process (they are test code, not the package)."""


def timed(fn: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start


def _noop(k: int) -> int:
    return k


def startup(executor: str) -> None:
    """Open the executor with 2 workers, run two trivial chunks, close it: the fixed cost of a command."""
    with open_executor(executor, 2) as ex:
        list(ex.map_unordered(_noop, [(1,), (2,)]))


def ray_vs_local(sizes: list[int], scratch: Path) -> list[dict[str, float]]:
    rows = []
    for n in sizes:
        row: dict[str, float] = {"episodes": n}
        for executor in ("local", "ray"):
            root = scratch / f"{executor}-{n}"
            chunk = max(1, n // 8)
            config = CollectConfig(ENV, "random", n, seed=11, workers=2, executor=executor, chunk_episodes=chunk)
            row[f"collect_{executor}_s"] = timed(collect, root, config)
            row[f"annotate_{executor}_s"] = timed(annotate, root, make_critic("shapley"), workers=2, executor=executor,
                                                  chunk_episodes=chunk)  # fmt: skip
            row[f"startup_{executor}_s"] = timed(startup, executor)
            steps = int(Dataset(root).episodes_column("length", ENV, "random").sum())
        row["steps"] = steps
        for stage in ("collect", "annotate"):
            row[f"{stage}_local_steps_s"] = steps / row[f"{stage}_local_s"]
            row[f"{stage}_ray_steps_s"] = steps / row[f"{stage}_ray_s"]
            row[f"{stage}_ratio"] = row[f"{stage}_local_s"] / row[f"{stage}_ray_s"]
        rows.append(row)
        print(f"{n:>5} episodes  collect ray÷local {row['collect_ratio']:.2f} ({row['collect_ray_s']:.1f} s vs "
              f"{row['collect_local_s']:.1f} s)  shapley ray÷local {row['annotate_ratio']:.2f} "
              f"({row['annotate_ray_s']:.1f} s vs {row['annotate_local_s']:.1f} s)  start-up ray "
              f"{row['startup_ray_s']:.1f} s, local {row['startup_local_s']:.1f} s", flush=True)  # fmt: skip
    return rows


def batch_overhead(requests: int, scratch: Path) -> dict[str, float]:
    root = scratch / "llm"
    collect(root, CollectConfig("lbf-8x8-2p-2f", "expert", requests, seed=2))
    out: dict[str, float] = {"requests": requests}
    fakes = subprocess.Popen([sys.executable, str(FAKES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert fakes.stdin is not None and fakes.stdout is not None
    batch_url, chat_url = fakes.stdout.readline().split()
    try:
        for mode, url in (("interactive", chat_url), ("batch", batch_url)):
            copy = scratch / f"llm-{mode}"
            shutil.copytree(root, copy)
            transport = TransportConfig(mode=mode, batch_poll_s=0.0, backoff_s=0.0)
            config = LLMConfig(critic="llm-mca", base_url=url, model="fake-model", response_format="json_object",
                               transport=transport)  # fmt: skip
            critic = LLMCritic(config, cache=ReplyCache(scratch / f"{mode}.sqlite"))
            out[f"{mode}_s_per_request"] = timed(annotate, copy, critic) / requests
    finally:
        fakes.stdin.close()
        polls = fakes.stdout.readline().strip()
        fakes.wait(timeout=30)
    out["batch_polls"] = float(polls or "nan")
    out["overhead_s_per_request"] = out["batch_s_per_request"] - out["interactive_s_per_request"]
    print(f"batch transport: {out['batch_s_per_request'] * 1e3:.1f} ms per request vs interactive "
          f"{out['interactive_s_per_request'] * 1e3:.1f} ms ({requests} requests, {polls} polls, "
          "no model time)")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = ray_vs_local(args.sizes, Path(tmp))
        above = [min(r["collect_ratio"], r["annotate_ratio"]) >= 0.8 for r in rows]  # from this size on, all ≥ 0.8
        crossing = next((r["episodes"] for k, r in enumerate(rows) if all(above[k:])), None)
        print(f"ratio ≥ 0.8 for both stages from {crossing} episodes" if crossing else
              "ratio below 0.8 at every size measured (Ray's start-up dominates here)")  # fmt: skip
        batch = batch_overhead(args.requests, Path(tmp))
    if args.out:
        args.out.write_text(json.dumps({"ray_vs_local": rows, "batch": batch, "crossing": crossing}, indent=2))


if __name__ == "__main__":
    main()
