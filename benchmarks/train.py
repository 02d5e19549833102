"""Training throughput of our ``iql-cql`` against d3rlpy ``DiscreteCQL`` independent learners (CPU, 1 thread).

What is compared: agent-transitions processed per second of training.

* ours, ``llmca_data.baselines.iql_cql.fit_iql_cql``: one shared ``AgentNet`` for all N agents;
  one gradient step on a batch of B *joint* transitions processes B × N agent-transitions
  (Double-DQN TD loss + CQL penalty, Adam step, Polyak target update).
* d3rlpy 2.8.1 ``DiscreteCQL``: one learner per agent, each ``fit`` on ``to_d3rlpy(agent=i)``;
  one update on a batch of B processes B agent-transitions. The N learners run one after the
  other; their rate is (N × S × B) ÷ (sum of their timed seconds).

Both use the same settings — batch size B (32 and 256), MLP hidden sizes (``HIDDEN``), learning
rate, γ, CQL weight and a target copied every 200 steps — d3rlpy through our ``D3rlpyCQLConfig``
(``make_d3rlpy_config``), and each library's own training loop, run for
``WARMUP + STEPS`` steps. Exactly what is timed (``time.perf_counter``) is the wall time from the
end of step ``WARMUP`` to the end of step ``WARMUP + STEPS``, i.e. STEPS iterations of the loop body:

* ours: ``train_loop`` (called by ``fit_iql_cql``) calls ``progress`` after the update of every
  ``eval_every``-th step; with ``eval_every = WARMUP`` and ``val_fraction = 0`` (no validation
  loss) the timed span holds STEPS × (minibatch sampling + loss + backward + Adam) plus the
  target copies (every 200 steps) plus a ``metrics.jsonl`` row every WARMUP steps (a few µs each).
* d3rlpy: ``fit(callback=...)`` runs the callback after every step; the timed span holds STEPS ×
  (minibatch sampling + ``update``), ``n_steps_per_epoch = WARMUP + STEPS`` so no epoch end falls
  inside it. ``NoopAdapterFactory`` (nothing written), ``show_progress=False``, output swallowed.

Not timed: building and loading the dataset, network/optimiser creation, the warm-up, and the
saving of the run directory (``save_run``, after the loop). Each measurement is repeated
``REPEATS`` times and the fastest kept (the machine is shared).

Goal: ours ÷ d3rlpy ≥ 2× at both batch sizes on CPU with one thread.

Usage: ``python benchmarks/train.py``
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"

import torch

from llmca_data.baselines.d3rlpy_runner import D3rlpyCQLConfig, make_d3rlpy_config
from llmca_data.baselines.iql_cql import IQLCQLConfig, fit_iql_cql
from llmca_data.baselines.training import load_data
from llmca_data.collect import CollectConfig, collect
from llmca_data.loaders import OfflineDataset

ENV = "lbf-8x8-2p-2f"
TIERS: tuple[tuple[str, int], ...] = (("expert", 30), ("medium", 30))
HIDDEN = (128, 128)
BATCH_SIZES = (32, 256)
WARMUP = 50
STEPS = 500
REPEATS = 2


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow d3rlpy's structlog lines (stdout) and legacy gym's import notice (stderr)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class SpanTimer:
    """Records the time at the end of step ``WARMUP`` and at the end of step ``WARMUP + STEPS``."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None

    def mark(self, step: int) -> None:
        if step == WARMUP:
            self.start = time.perf_counter()
        elif step == WARMUP + STEPS:
            self.end = time.perf_counter()

    def seconds(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError("timed span not reached")
        return self.end - self.start


def build_dataset(root: Path) -> None:
    for tier, episodes in TIERS:
        collect(root, CollectConfig(ENV, tier, episodes, seed=0))


def time_ours(data: dict[str, torch.Tensor], info: dict[str, Any], batch: int, work: Path) -> float:
    """Seconds of STEPS ``iql-cql`` steps at batch ``batch`` (joint transitions)."""
    config = IQLCQLConfig(
        steps=WARMUP + STEPS, batch_size=batch, hidden=HIDDEN, device="cpu", eval_every=WARMUP, val_fraction=0.0
    )
    timer = SpanTimer()
    out = work / f"iql-cql-b{batch}"
    fit_iql_cql(data, info, out, config, progress=lambda step, _total, _status="": timer.mark(step))
    shutil.rmtree(out, ignore_errors=True)
    return timer.seconds()


def time_d3rlpy(mdps: list[Any], batch: int) -> float:
    """Seconds of STEPS ``DiscreteCQL`` updates at batch ``batch``, summed over the agents' learners."""
    with quiet():
        import d3rlpy
        from d3rlpy.logging import NoopAdapterFactory
    total = 0.0
    for i, mdp in enumerate(mdps):
        d3rlpy.seed(i)
        algo = make_d3rlpy_config(D3rlpyCQLConfig(batch_size=batch, hidden=HIDDEN)).create(device="cpu")
        timer = SpanTimer()
        with quiet():
            algo.fit(
                mdp,
                n_steps=WARMUP + STEPS,
                n_steps_per_epoch=WARMUP + STEPS,
                logger_adapter=NoopAdapterFactory(),
                show_progress=False,
                save_interval=WARMUP + STEPS + 1,
                callback=lambda _algo, _epoch, step, t=timer: t.mark(step),
            )
        total += timer.seconds()
    return total


def main() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="llmca-bench-train-"))
    try:
        root = work / "ds"
        t0 = time.perf_counter()
        build_dataset(root)
        data, info = load_data(root, ENV, None, "team", "cpu")
        ds = OfflineDataset.open(root, ENV)
        mdps = [ds.to_d3rlpy(agent=i, reward="team") for i in range(ds.spec.n_agents)]
        m, n, _ = data["obs"].shape
        print(
            f"{ENV} ({', '.join(f'{t} {e} ep' for t, e in TIERS)}): {m} joint transitions, N = {n} agents; "
            f"built in {time.perf_counter() - t0:.1f} s"
        )
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, hidden {list(HIDDEN)}, "
            f"{STEPS} timed steps after {WARMUP} warm-up, best of {REPEATS}\n"
        )
        header = f"{'batch':>5}  {'ours agent-tr/s':>15}  {'d3rlpy agent-tr/s':>17}  {'ours steps/s':>12}  "
        header += f"{'d3rlpy upd/s':>12}  {'ratio':>6}  goal"
        print(header)
        for batch in BATCH_SIZES:
            ours_s = min(time_ours(data, info, batch, work) for _ in range(REPEATS))
            d3_s = min(time_d3rlpy(mdps, batch) for _ in range(REPEATS))
            ours_rate = STEPS * batch * n / ours_s
            d3_rate = STEPS * batch * n / d3_s
            ratio = ours_rate / d3_rate
            print(
                f"{batch:>5}  {ours_rate:>15,.0f}  {d3_rate:>17,.0f}  {STEPS / ours_s:>12,.0f}  "
                f"{STEPS * n / d3_s:>12,.0f}  {ratio:>5.2f}×  {'ok' if ratio >= 2 else 'MISSED'} (≥ 2×)"
            )
        print(
            "\nours steps/s: joint-batch updates of the shared net (B × N agent-transitions each); "
            "d3rlpy upd/s: per-learner updates (B agent-transitions each), all learners together."
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
