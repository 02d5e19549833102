"""`llmca publish` / `llmca download` end to end, and the dataset card's code blocks run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.build import build

CLI = [sys.executable, "-c", "from llmca_data.cli import main; main()"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_publish_download_and_the_cards_code_blocks(
    lbf_dataset: Path, hub_env: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    annotate(lbf_dataset, make_critic("uniform"))
    build(lbf_dataset)
    env = hub_env()
    dry = run(["publish", str(lbf_dataset), "--repo-id", "llmca/annotated", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "add    data/lbf-8x8-2p-2f/steps/expert-00000.parquet" in dry.stdout and "nothing written" in dry.stdout
    first = run(["publish", str(lbf_dataset), "--repo-id", "llmca/annotated"], env)
    assert first.returncode == 0 and "published llmca/annotated@main" in first.stdout, first.stderr
    again = run(["publish", str(lbf_dataset), "--repo-id", "llmca/annotated"], env)
    assert again.returncode == 0 and "up to date: no commit" in again.stdout, again.stderr

    card = (lbf_dataset / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, env={**os.environ, **hub_env()}, timeout=300
        )
        assert proc.returncode == 0, f"card block failed:\n{block}\n{proc.stderr[-2000:]}"

    out = tmp_path / "copy"
    got = run(["download", "llmca/annotated", "--out", str(out), "--revision", "main"], hub_env())
    assert got.returncode == 0 and "all sha256 verified" in got.stdout, got.stderr
    assert run(["validate", str(out)], {}).returncode == 0
    missing = run(["download", "llmca/nothing", "--out", str(tmp_path / "x")], hub_env())
    assert missing.returncode == 2 and "llmca/nothing" in missing.stderr
