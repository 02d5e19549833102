"""Recipes: declarative, versioned TOML files that say what a pipeline run builds.

Input: a built-in recipe name (``quick``, ``benchmark``; shipped as package data in
``llmca_data/recipes/``) or the path of a ``.toml`` file. Output: a frozen, fully checked
``Recipe`` — data (envs × tiers × episodes or target transitions), critics and the LLM subset,
critic comparisons, training arms and budgets, and the evaluation protocol — that
``llmca pipeline --recipe`` runs and records, resolved, in ``pipeline.json``.

Every key is checked before anything runs: an unknown key, a value of the wrong type, an
unknown env id or tier, or an out-of-range number is a ``RecipeError`` that names the file and
the dotted key (``train.arms[1].algo``). Critic and algorithm ids are checked by the pipeline
against the annotation and baseline registries, also before anything runs.

Example (``quick.toml``, abridged)::

    recipe_version = 1
    name = "quick"

    [[data]]
    env = "lbf-8x8-2p-2f"
    tiers = ["expert", "medium", "random"]
    episodes = 160

    [train]
    envs = ["lbf-8x8-2p-2f"]
    tiers = ["expert", "medium"]
    arms = [{ algo = "bc" }, { algo = "iql-cql", reward = "credit_shapley" }]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from llmca_data.config import ConfigError, JsonConfig, bounded
from llmca_data.envs.ids import EnvId
from llmca_data.executor import EXECUTORS
from llmca_data.tiers import TIERS

RECIPE_VERSION = 1
"""The recipe format this package reads (``recipe_version`` of every file)."""
BUILTIN = ("quick", "benchmark")
"""Recipes shipped with the package (``llmca_data/recipes/<name>.toml``)."""


class RecipeError(ConfigError):
    """A recipe that cannot be read or whose keys or values are wrong; the message names them."""


def _check_env(owner: str, key: str, env_id: str) -> None:
    try:
        EnvId.parse(env_id)
    except ValueError as exc:
        raise RecipeError(f"{owner}: {key}: {exc}") from None


def _check_tiers(owner: str, key: str, tiers: tuple[str, ...]) -> None:
    if not tiers:
        raise RecipeError(f"{owner}: {key} needs at least one tier ({', '.join(TIERS)})")
    if bad := [t for t in tiers if t not in TIERS]:
        raise RecipeError(f"{owner}: {key}: unknown tier {bad[0]!r}; choose from {', '.join(TIERS)}")


@dataclass(frozen=True)
class DataSpec(JsonConfig):
    """One env's data: its tiers, each with ``episodes`` episodes or at least ``transitions`` steps.
    An env may have several entries (e.g. more expert episodes than random ones)."""

    env: str = ""
    """Env id (``llmca envs`` lists them)."""
    tiers: tuple[str, ...] = ("expert", "medium", "random")
    """Tiers to collect."""
    episodes: int | None = bounded(None, low=1)
    """Episodes per tier (exactly one of ``episodes`` and ``transitions``)."""
    transitions: int | None = bounded(None, low=1)
    """Collect episodes until each tier holds at least this many joint transitions (steps)."""


@dataclass(frozen=True)
class AnnotateSpec(JsonConfig):
    """Which critics annotate, which episodes the (slow) LLM critics see, and which pairs are scored."""

    critics: tuple[str, ...] = ("uniform", "shapley", "counterfactual", "counterfactual-h5")
    """Reference critics, run on every episode."""
    llm_critics: tuple[str, ...] = ("llm-mca-shares", "llm-taca-shares")
    """LLM critics (the local server unless configured otherwise), run on the subset below."""
    llm_envs: tuple[str, ...] = ()
    """Envs whose episodes the LLM critics annotate (empty: every data env)."""
    llm_tier: str = "expert"
    """The tier whose (short) episodes the LLM critics annotate."""
    llm_episodes: int = bounded(2, low=0)
    """Episodes per env for each LLM critic (the first ones, in episode-id order)."""
    llm_budget_s: float = bounded(600.0, low=0.0)
    """No new LLM critic run starts after this many seconds of LLM annotation."""
    llm_base_url: str = ""
    """The LLM critics' OpenAI-compatible endpoint (e.g. a vLLM server's ``http://host:8000/v1``);
    empty: the embedded local model."""
    llm_model: str = ""
    """The model name at ``llm_base_url`` (required with it)."""
    llm_response_format: str = "grammar"
    """As ``llmca annotate --response-format``: grammar | json_object | json_schema | vllm | none."""
    llm_transport: str = "interactive"
    """``interactive``, or ``batch`` (the OpenAI Batch API; needs ``llm_base_url``)."""
    comparisons: tuple[tuple[str, str], ...] = (
        ("uniform", "shapley"),
        ("counterfactual", "shapley"),
        ("llm-mca-shares", "shapley"),
        ("llm-mca-shares", "counterfactual-h5"),
        ("llm-taca-shares", "shapley"),
    )
    """(critic, reference) pairs scored by critic-eval (pairs with a critic that did not run are skipped)."""


@dataclass(frozen=True)
class ArmSpec(JsonConfig):
    """One training arm: an algorithm, its reward source and any of its config fields."""

    algo: str = ""
    """Algorithm id (``llmca train --help`` lists them)."""
    reward: str = "team"
    """``team``, ``env`` or ``credit_<critic>`` (only for algorithms that train on a reward source)."""
    task_input: str | None = None
    """LLM-TACA task critic (``llm-taca``, ``iql-cql`` only)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Fields of the algorithm's config (e.g. ``{ cql_alpha = 0.1 }``), checked like ``--config``."""


@dataclass(frozen=True)
class TrainSpec(JsonConfig):
    """The baseline grid: arms × seeds on each env's tiers, each run with the same budget."""

    envs: tuple[str, ...] = ("lbf-8x8-2p-2f",)
    """Env ids to train on, one grid each (each must be among the recipe's data envs)."""
    tiers: tuple[str, ...] = ("expert", "medium")
    """Tiers to train on (of that env's data)."""
    seeds: int = bounded(5, low=1)
    """Training seeds per arm (0 .. seeds - 1)."""
    steps: int = bounded(1000, low=1)
    """Gradient steps of every run (an arm's ``config.steps`` overrides it)."""
    arms: tuple[ArmSpec, ...] = (ArmSpec("bc"), ArmSpec("iql-cql"), ArmSpec("iql-cql", "credit_shapley"))
    """The arms."""


@dataclass(frozen=True)
class EvaluateSpec(JsonConfig):
    """Evaluation protocol (DESIGN.md §8): rollouts per seed on evaluation seeds disjoint from data
    and validation seeds; value-based learners act greedily, the BC family both ways."""

    protocol: int = bounded(2, low=2, high=2)
    """Evaluation protocol version (2)."""
    episodes: int = bounded(100, low=1)
    """Evaluation episodes per seed (protocol 2 asks for at least 100 in published tables)."""


@dataclass(frozen=True)
class Recipe(JsonConfig):
    """A whole pipeline run."""

    recipe_version: int = bounded(RECIPE_VERSION, low=RECIPE_VERSION, high=RECIPE_VERSION)
    """Format version of the file (this package reads 1)."""
    name: str = "custom"
    """Name shown in reports."""
    description: str = ""
    """What the recipe is for."""
    seed: int = bounded(0, low=0)
    """Base seed of every collection run."""
    workers: int = bounded(2, low=1)
    """Processes for collection, annotation and training runs."""
    executor: str = "local"
    """Where collection and reference annotation run: ``local`` processes or ``ray`` (Ray tasks, the
    cluster at ``$RAY_ADDRESS`` or a local one); the dataset is the same either way."""
    data: tuple[DataSpec, ...] = ()
    """The envs to collect."""
    annotate: AnnotateSpec = AnnotateSpec()
    """Critics and comparisons."""
    train: TrainSpec = TrainSpec()
    """Training grid."""
    evaluate: EvaluateSpec = EvaluateSpec()
    """Evaluation protocol."""

    def llm_envs(self) -> tuple[str, ...]:
        """The envs the LLM critics annotate: ``annotate.llm_envs``, or every data env."""
        return self.annotate.llm_envs or tuple(dict.fromkeys(d.env for d in self.data))

    def check(self, owner: str) -> Recipe:
        """Cross-field checks (env ids, tiers, one size per data entry, the train env among the data);
        returns ``self``.

        Raises:
            RecipeError: naming ``owner`` (the file) and the dotted key.
        """
        if not self.data:
            raise RecipeError(f"{owner}: a recipe needs at least one [[data]] entry")
        if self.annotate.llm_transport not in ("interactive", "batch"):
            raise RecipeError(f"{owner}: annotate.llm_transport must be interactive or batch, "
                              f"got {self.annotate.llm_transport!r}")  # fmt: skip
        if bool(self.annotate.llm_base_url) != bool(self.annotate.llm_model):
            raise RecipeError(f"{owner}: annotate.llm_base_url and annotate.llm_model go together (both or neither)")
        if self.annotate.llm_transport == "batch" and not self.annotate.llm_base_url:
            raise RecipeError(f"{owner}: annotate.llm_transport 'batch' needs annotate.llm_base_url (an endpoint "
                              "with the Batch API) and annotate.llm_model")  # fmt: skip
        if self.executor not in EXECUTORS:
            raise RecipeError(f"{owner}: executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for i, d in enumerate(self.data):
            key = f"data[{i}]"
            _check_env(owner, f"{key}.env", d.env)
            _check_tiers(owner, f"{key}.tiers", d.tiers)
            if (d.episodes is None) == (d.transitions is None):
                raise RecipeError(f"{owner}: {key} needs exactly one of 'episodes' and 'transitions'")
        envs = list(dict.fromkeys(d.env for d in self.data))
        for i, env_id in enumerate(self.annotate.llm_envs):
            if env_id not in envs:
                raise RecipeError(f"{owner}: annotate.llm_envs[{i}] {env_id!r} is not among the data envs {envs}")
        _check_tiers(owner, "annotate.llm_tier", (self.annotate.llm_tier,))
        if not self.train.envs:
            raise RecipeError(f"{owner}: train.envs needs at least one env")
        for i, env_id in enumerate(self.train.envs):
            if env_id not in envs:
                raise RecipeError(f"{owner}: train.envs[{i}] {env_id!r} is not among the data envs {envs}")
            collected = {t for d in self.data if d.env == env_id for t in d.tiers}
            if missing := [t for t in self.train.tiers if t not in collected]:
                raise RecipeError(f"{owner}: train.tiers {missing} are not collected for {env_id}")
        _check_tiers(owner, "train.tiers", self.train.tiers)
        if not self.train.arms:
            raise RecipeError(f"{owner}: train.arms needs at least one arm")
        for i, arm in enumerate(self.train.arms):
            if not arm.algo:
                raise RecipeError(f"{owner}: train.arms[{i}] needs an 'algo'")
        return self


def parse_recipe(text: str, owner: str = "recipe") -> Recipe:
    """A checked ``Recipe`` from TOML ``text``; ``owner`` names it in errors.

    Raises:
        RecipeError: not TOML, or any key or value wrong.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{owner} is not valid TOML: {exc}") from None
    version = raw.get("recipe_version")
    if version != RECIPE_VERSION:
        raise RecipeError(
            f"{owner}: recipe_version = {version!r}; this package reads recipe_version = {RECIPE_VERSION} "
            "(add it as the file's first line, or upgrade llmca-data for a newer format)"
        )
    try:
        recipe = Recipe.from_dict(raw, strict=True, owner=owner)
    except RecipeError:
        raise
    except ConfigError as exc:
        raise RecipeError(str(exc)) from None
    return recipe.check(owner)


def load_recipe(name_or_path: str | Path) -> tuple[Recipe, str]:
    """The recipe named ``name_or_path`` (built-in name or file path) and its TOML text.

    Raises:
        RecipeError: an unknown name, an unreadable file or a bad recipe.
    """
    text: str
    if str(name_or_path) in BUILTIN:
        text = resources.files("llmca_data").joinpath(f"recipes/{name_or_path}.toml").read_text()
        return parse_recipe(text, f"recipe {name_or_path!r}"), text
    path = Path(name_or_path)
    if not path.is_file():
        raise RecipeError(
            f"unknown recipe {str(name_or_path)!r}: use a built-in one ({', '.join(BUILTIN)}) or the path of a "
            ".toml file"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe {path}: {exc}") from None
    return parse_recipe(text, str(path)), text
