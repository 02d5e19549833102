"""Every command fed bad input: a non-zero exit, one clear message, no traceback, nothing created.

The table runs each case through the real entry point (``llmca_data.cli.main``) in this process;
the cases that need their own environment (a Hub endpoint, a missing torch) run it in a
subprocess. Each message is matched against what it must name: the bad value and the fix.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmca_data.cli import main
from llmca_data.cli.output import os_error_message
from llmca_data.extras import missing_extra, require

LBF = "lbf-8x8-2p-2f"


@dataclass(frozen=True)
class Case:
    name: str
    command: str
    """The arguments, with ``{name}`` for the paths of the ``paths`` fixture (split like a shell)."""
    says: str
    """A regex the output must contain (the bad value or the fix)."""
    code: int = 2
    """Expected exit code: 2 for an error, 1 for a check that found problems."""


T = "--tier random --episodes 1"
TRAIN = f"train bc --dataset {{data}} --env {LBF} --out {{new}}"
DATASET_FIX = r"llmca collect|llmca download"
# fmt: off
CASES: tuple[Case, ...] = (
    Case("collect negative seed", f"collect {LBF} {T} --seed -1 --out {{new}}", r"--seed"),
    Case("collect unregistered env size", f"collect lbf-99x99-2p-2f {T} --out {{new}}", r"lbf-99x99-2p-2f"),
    Case("collect unknown tier", f"collect {LBF} --tier heroic --episodes 1 --out {{new}}", r"heroic"),
    Case("collect --out is a file", f"collect {LBF} {T} --out {{file}}", r"not a folder|choose another"),
    Case("collect --out under a file", f"collect {LBF} {T} --out {{file}}/sub", r"not a folder|choose another"),
    Case("markup-like text stays as typed", f"collect {LBF} --tier '[bold]x[/bold] [3, 4]' --episodes 1 --out {{new}}",
         r"\[bold\]x\[/bold\] \[3, 4\]"),
    Case("annotate unknown critic", "annotate {data} --critic shapely", r"unknown critic 'shapely'.*uniform, shapley"),
    Case("annotate unknown env", "annotate {data} --critic uniform --env lbf-nope", r"lbf-nope"),
    Case("annotate unknown tier", "annotate {data} --critic uniform --tier heroic", r"heroic"),
    Case("annotate gamma nan", "annotate {data} --critic counterfactual --gamma nan", r"gamma.*finite"),
    Case("annotate gamma above 1", "annotate {data} --critic counterfactual --gamma 1.5", r"gamma"),
    Case("annotate horizon id clash", "annotate {data} --critic counterfactual-h5 --horizon 3", r"horizon"),
    Case("annotate missing dataset", "annotate {new} --critic uniform", DATASET_FIX),
    Case("annotate without a critic", "annotate {data}", r"--critic"),
    Case("annotate dry run of a reference critic", "annotate {data} --critic uniform --dry-run", r"--dry-run"),
    Case("annotate missing credit file", "annotate {data} --from-file {new}/x.pq --critic-id mine", r"x\.pq"),
    Case("annotate bad llm response format", "annotate {data} --critic llm-mca --response-format xml",
         r"--response-format"),
    Case("critic-eval missing dataset", "critic-eval {new} --critic uniform", DATASET_FIX),
    Case("critic-eval unknown critic", "critic-eval {data} --critic bogus", r"bogus"),
    Case("build missing dataset", "build {new}", DATASET_FIX),
    Case("publish missing dataset", "publish {new} --repo-id me/x", DATASET_FIX + "|no dataset"),
    Case("publish a folder that is no dataset", "publish {work} --repo-id me/x --dry-run", DATASET_FIX),
    Case("validate malformed info.json", "validate {bad_info}", r"info\.json", code=1),
    Case("validate malformed manifest", "validate {bad_manifest}", r"manifest", code=1),
    Case("validate missing dataset", "validate --dataset {new}", DATASET_FIX + "|no dataset", code=1),
    Case("train unknown algorithm", f"train dqn --dataset {{data}} --env {LBF} --out {{new}}", r"dqn.*bc"),
    Case("train missing dataset", f"train bc --dataset {{new}} --env {LBF} --out {{run}}", DATASET_FIX + "|no dataset"),
    Case("train config not JSON", TRAIN + " --config {not_json}", r"not JSON"),
    Case("train config unknown key", TRAIN + " --config {unknown_key}", r"unknown config key 'gama'"),
    Case("train negative seed", TRAIN + " --seed -3", r"--seed"),
    Case("evaluate a folder that is not a run", "evaluate {work}", r"llmca train"),
    Case("evaluate unknown act mode", "evaluate {work} --act argmax", r"argmax|llmca train"),
    Case("train-online unknown critic", f"train-online {LBF} --critic bogus --out {{new}}", r"unknown critic 'bogus'"),
    Case("train-online unregistered env", "train-online lbf-99x99-2p-2f --out {new}", r"lbf-99x99-2p-2f"),
    Case("train-online gamma nan", f"train-online {LBF} --out {{new}} --config {{nan_gamma}}", r"gamma.*finite"),
    Case("train-online negative seed", f"train-online {LBF} --seed -1 --out {{new}}", r"--seed"),
    Case("train-online config not JSON", f"train-online {LBF} --out {{new}} --config {{not_json}}", r"not JSON"),
    Case("plot a run that is not online", "plot {work} --out {new}/a.png", r"curve\.jsonl|config\.json|train-online"),
    Case("leaderboard validate missing dataset", "leaderboard validate {work} --dataset {new}", r"dataset|no such"),
    Case("leaderboard evaluate missing submission", "leaderboard evaluate {new} --out {run}", r"submission", code=1),
    Case("leaderboard render no results", "leaderboard render {new} --out {run}", r"results|leaderboard evaluate"),
    Case("serve-llm missing model file", "serve-llm --model-path {new}/m.gguf --port 0", r"m\.gguf"),
    Case("pipeline --out is a file", "pipeline --out {file}", r"not a folder"),
    Case("pipeline unknown recipe", "pipeline --recipe tiny --out {new}", r"tiny.*quick"),
)
# fmt: on


@pytest.fixture
def paths(lbf_dataset: Path, tmp_path: Path) -> dict[str, Path]:
    """The paths the cases point at: a real dataset, broken copies of it, files of bad settings."""
    out = {"data": lbf_dataset, "new": tmp_path / "missing", "run": tmp_path / "run-out"}
    out["work"] = tmp_path / "work"
    out["file"] = out["work"] / "a-file.txt"
    out["work"].mkdir()
    out["file"].write_text("not a folder\n")
    for name, rel, text in (("bad_info", "meta/info.json", "{not json"), ("bad_manifest", "meta/manifest.json",
                                                                             '{"files": 7}')):  # fmt: skip
        copy = tmp_path / name
        shutil.copytree(lbf_dataset, copy)
        (copy / rel).write_text(text)
        out[name] = copy
    for name, text in (("not_json", "{lr: 0.1"), ("unknown_key", '{"gama": 0.9}'),
                       ("nan_gamma", '{"gamma": NaN}')):  # fmt: skip
        out[name] = tmp_path / f"{name}.json"
        out[name].write_text(text)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_message(case: Case, paths: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.relative_to(paths["data"]) for p in paths["data"].rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(**paths) for arg in shlex.split(case.command)])
    out, err = capsys.readouterr()
    text = out + err
    assert exit_info.value.code == case.code, text
    assert "Traceback" not in text
    assert len(err.strip().splitlines()) <= 12, err
    assert re.search(case.says, " ".join(text.split()), flags=0), text
    assert not paths["new"].exists(), "a failed command created the missing path"
    assert sorted(p.relative_to(paths["data"]) for p in paths["data"].rglob("*")) == before


def _run_cli(args: list[str], env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}from llmca_data.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["download", "llmca/annotated"], r"127\.0\.0\.1:9|cannot reach|connect"),
        (["download", "not a//repo id"], r"repo id"),
    ],
    ids=["unreachable endpoint", "bad repo id"],
)
def test_hub_errors_are_one_clear_message(args: list[str], says: str, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    proc = _run_cli([*args, "--out", str(tmp_path / "dest")], env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    assert re.search(says, proc.stderr), proc.stderr


def test_a_missing_extra_names_the_install_command(lbf_dataset: Path, tmp_path: Path) -> None:
    blocked = "import sys; sys.modules['torch'] = None; "
    args = ["train", "bc", "--dataset", str(lbf_dataset), "--env", LBF, "--out", str(tmp_path / "run")]
    proc = _run_cli(args, {}, prelude=blocked)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert 'pip install "llmca-data[train]"' in proc.stderr
    debug = _run_cli([*args, "--debug"], {}, prelude=blocked)
    assert "Traceback" in debug.stderr, "--debug shows the traceback"


def test_require_and_missing_extra() -> None:
    assert require("json") is json
    with pytest.raises(ImportError) as info:
        require("llmca_no_such_module")
    assert missing_extra(info.value) is None, "a module of no extra is a plain ImportError"
    error = missing_extra(ModuleNotFoundError("no module", name="d3rlpy.algos"), "training")
    assert error is not None and str(error).startswith("training needs d3rlpy") and "[train]" in str(error)


def test_a_full_disk_says_so() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError) as info, open("/dev/full", "w") as f:
        f.write("x" * 10)
        f.flush()
    assert "disk is full" in os_error_message(info.value)
