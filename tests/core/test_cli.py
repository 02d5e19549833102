"""The `llmca` command line: listing, errors that name the fix, and the help texts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llmca_data.envs import CONTRACT_ENV_IDS

CLI = [sys.executable, "-c", "from llmca_data.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_envs_lists_every_contract_env() -> None:
    proc = run("envs", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["env_id"]: r for r in json.loads(proc.stdout)}
    assert list(rows) == list(CONTRACT_ENV_IDS)
    assert rows["lbf-10x10-3p-3f"]["agents"] == 3 and rows["rware-small-4ag"]["agents"] == 4
    assert rows["rware-tiny-2ag"]["max_steps"] == 500
    assert all(r["obs_dim"] > 0 and r["state_dim"] > 0 for r in rows.values())


def test_unknown_env_and_tier_name_the_valid_ones(tmp_path: Path) -> None:
    proc = run("collect", "lbf-9x9", "--tier", "expert", "--episodes", "1", "--out", str(tmp_path))
    assert proc.returncode == 2 and "lbf-8x8-2p-2f" in proc.stderr and "llmca envs" in proc.stderr
    proc = run("collect", "lbf-8x8-2p-2f", "--tier", "great", "--episodes", "1", "--out", str(tmp_path))
    assert proc.returncode == 2 and "expert, medium, random, replay" in proc.stderr
    assert not (tmp_path / "meta").exists()


def test_validate_of_an_empty_folder_says_what_to_do(tmp_path: Path) -> None:
    proc = run("validate", str(tmp_path))
    assert proc.returncode == 1 and "llmca collect" in proc.stderr


def test_collect_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc = run("collect", "spaceworld-10x10-3a", "--tier", "replay", "--episodes", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "3 new episodes" in proc.stdout
    assert run("validate", str(out)).returncode == 0


def test_every_command_has_help() -> None:
    for command in ("envs", "collect", "validate", "pipeline", "critic-bench"):
        proc = run(command, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout, command


def test_critic_help_names_every_built_in_critic() -> None:
    from llmca_data.annotation.registry import critic_ids
    from llmca_data.cli.llm_options import CRITIC_IDS

    named = set(CRITIC_IDS.split(" | ")) - {"counterfactual-hN"}  # the horizon family, e.g. counterfactual-h5
    assert named == set(critic_ids())
