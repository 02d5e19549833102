"""Recipes: every key parses, and every unknown key or bad value is an error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmca_data.recipe import BUILTIN, Recipe, RecipeError, load_recipe, parse_recipe

FULL = """
recipe_version = 1
name = "mine"
description = "every key set"
seed = 3
workers = 1
executor = "ray"

[[data]]
env = "lbf-8x8-2p-2f"
tiers = ["expert", "medium"]
transitions = 5000

[[data]]
env = "lbf-8x8-2p-2f"
tiers = ["random"]
episodes = 4

[[data]]
env = "spaceworld-10x10-3a"
tiers = ["expert"]
episodes = 7

[annotate]
critics = ["shapley"]
llm_critics = ["llm-mca"]
llm_envs = ["spaceworld-10x10-3a"]
llm_tier = "medium"
llm_episodes = 1
llm_budget_s = 30.5
llm_base_url = "http://127.0.0.1:8000/v1"
llm_model = "Qwen/Qwen2.5-7B-Instruct"
llm_response_format = "vllm"
llm_transport = "interactive"
comparisons = [["llm-mca", "shapley"]]

[train]
envs = ["lbf-8x8-2p-2f"]
tiers = ["expert", "random"]
seeds = 2
steps = 300

[[train.arms]]
algo = "bc"

[[train.arms]]
algo = "iql-cql"
reward = "credit_shapley"
task_input = "llm-taca"
config = { cql_alpha = 0.3, hidden = [64] }

[evaluate]
protocol = 2
episodes = 120
"""


def test_every_key_parses() -> None:
    r = parse_recipe(FULL, "full.toml")
    assert (r.recipe_version, r.name, r.description, r.seed, r.workers) == (1, "mine", "every key set", 3, 1)
    assert [(d.env, d.tiers, d.episodes, d.transitions) for d in r.data] == [
        ("lbf-8x8-2p-2f", ("expert", "medium"), None, 5000),
        ("lbf-8x8-2p-2f", ("random",), 4, None),
        ("spaceworld-10x10-3a", ("expert",), 7, None),
    ]
    a = r.annotate
    assert (a.critics, a.llm_critics, a.llm_envs, a.llm_tier, a.llm_episodes, a.llm_budget_s) == (
        ("shapley",), ("llm-mca",), ("spaceworld-10x10-3a",), "medium", 1, 30.5)  # fmt: skip
    assert a.comparisons == (("llm-mca", "shapley"),)
    assert (a.llm_base_url, a.llm_model, a.llm_response_format, a.llm_transport) == (
        "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", "vllm", "interactive")  # fmt: skip
    assert r.executor == "ray"
    t = r.train
    assert (t.envs, t.tiers, t.seeds, t.steps) == (("lbf-8x8-2p-2f",), ("expert", "random"), 2, 300)
    assert t.arms[0].algo == "bc" and t.arms[0].reward == "team" and t.arms[0].config == {}
    arm = t.arms[1]
    assert (arm.algo, arm.reward, arm.task_input, arm.config) == (
        "iql-cql", "credit_shapley", "llm-taca", {"cql_alpha": 0.3, "hidden": [64]})  # fmt: skip
    assert (r.evaluate.protocol, r.evaluate.episodes) == (2, 120)
    # the resolved recipe (as pipeline.json records it) reads back to the same recipe
    assert Recipe.from_dict(_as_json(r.to_dict()), strict=True) == r


def _as_json(value: object) -> object:
    import json

    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_recipes_parse(name: str) -> None:
    recipe, text = load_recipe(name)
    assert recipe.name == name and text.startswith("#")
    assert recipe.evaluate.protocol == 2 and recipe.evaluate.episodes >= 100


def _edit(old: str, new: str) -> str:
    assert old in FULL
    return FULL.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_edit('name = "mine"', 'nmae = "mine"'), r"unknown config key 'nmae'; allowed: recipe_version, name"),
        (_edit("transitions = 5000", "transitions = 5000\nepisods = 3"), r"unknown config key 'data\[0\].episods'"),
        (_edit("episodes = 120", "episodes = 120\nact = 'greedy'"), r"unknown config key 'evaluate.act'"),
        (_edit('algo = "bc"', 'algo = "bc"\nrewrd = "env"'), r"'train.arms\[0\].rewrd'"),
        (_edit("seeds = 2", "seeds = 0"), r"'train.seeds' must be in \[1, inf\)"),
        (_edit("seeds = 2", 'seeds = "2"'), r"'train.seeds' must be int"),
        (_edit("episodes = 4", "episodes = -4"), r"'data\[1\].episodes' must be in"),
        (_edit("llm_budget_s = 30.5", "llm_budget_s = nan"), r"'annotate.llm_budget_s' must be finite"),
        (_edit("protocol = 2", "protocol = 1"), r"'evaluate.protocol' must be in \[2, 2\]"),
        (
            _edit('comparisons = [["llm-mca", "shapley"]]', 'comparisons = [["llm-mca"]]'),
            r"'annotate.comparisons\[0\]'",
        ),
        (_edit('env = "spaceworld-10x10-3a"', 'env = "spaceworld-ten"'), r"data\[2\].env: unknown env id"),
        (_edit('tiers = ["random"]', 'tiers = ["noisy"]'), r"data\[1\].tiers: unknown tier 'noisy'"),
        (_edit("episodes = 4", "episodes = 4\ntransitions = 10"), r"data\[1\] needs exactly one of"),
        (_edit('tiers = ["expert", "random"]', 'tiers = ["replay"]'), r"train.tiers \['replay'\] are not collected"),
        (_edit('envs = ["lbf-8x8-2p-2f"]', 'envs = ["rware-tiny-2ag"]'), r"train.envs\[0\] 'rware-tiny-2ag' is not"),
        (_edit('llm_envs = ["spaceworld-10x10-3a"]', 'llm_envs = ["rware-tiny-2ag"]'), r"annotate.llm_envs\[0\]"),
        (_edit("steps = 300", "steps = 300\nold = 1"), r"unknown config key 'train.old'"),
        (_edit("recipe_version = 1", "recipe_version = 2"), r"recipe_version = 2; this package reads recipe_version"),
        (FULL.replace("recipe_version = 1", ""), r"recipe_version = None"),
        (_edit("[train]", "[train"), "is not valid TOML"),
        (_edit('executor = "ray"', 'executor = "dask"'), r"executor must be one of local, ray, got 'dask'"),
        (_edit('llm_transport = "interactive"', 'llm_transport = "post"'), r"annotate.llm_transport must be"),
        (_edit('llm_model = "Qwen/Qwen2.5-7B-Instruct"', ""), r"llm_base_url and annotate.llm_model go together"),
        (
            FULL.replace(
                'llm_base_url = "http://127.0.0.1:8000/v1"\nllm_model = "Qwen/Qwen2.5-7B-Instruct"\n', ""
            ).replace('llm_transport = "interactive"', 'llm_transport = "batch"'),
            r"llm_transport 'batch' needs annotate.llm_base_url",
        ),
    ],
)
def test_bad_recipes_name_the_key(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text, "bad.toml")


def test_unknown_recipe_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"unknown recipe 'quik': use a built-in one \(quick, benchmark\)"):
        load_recipe("quik")
    path = tmp_path / "r.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        load_recipe(path)
    path.write_text(FULL)
    recipe, text = load_recipe(path)
    assert recipe.name == "mine" and text == FULL


def test_pipeline_refuses_a_bad_recipe_before_writing_anything(tmp_path: Path) -> None:
    import subprocess
    import sys

    minimal = 'recipe_version = 1\n[[data]]\nenv = "lbf-8x8-2p-2f"\nepisodes = 2\n[train]\n'
    cases = {
        'arms = [{ algo = "bc", reward = "env" }]': "train.arms[0]: bc does not train on a reward source",
        'arms = [{ algo = "bc", config = { cql_alpha = 0.1 } }]': "train.arms[0]: BCConfig: unknown config key",
        'arms = [{ algo = "qmix" }]': "train.arms[0]: unknown algorithm 'qmix'",
        'steps = 10\n[annotate]\ncritics = ["shapely"]': "annotate.critics[0]: unknown critic 'shapely'",
        'steps = 10\n[annotate]\nllm_critics = ["llm-mcaa"]': "annotate.llm_critics[0]: unknown critic 'llm-mcaa'",
    }
    for i, (tail, message) in enumerate(cases.items()):
        recipe, out = tmp_path / f"r{i}.toml", tmp_path / f"out{i}"
        recipe.write_text(minimal + tail + "\n")
        cmd = [sys.executable, "-c", "from llmca_data.cli import main; main()", "pipeline", "--recipe", str(recipe),
               "--out", str(out)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()
