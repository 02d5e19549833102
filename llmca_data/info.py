"""``meta/info.json``: what a dataset directory holds and how it was made.

Input: the env specs and tier specs of every collection run. Output: a JSON document with
``schema_version``, package versions, per-env spec and kwargs, the tiers collected with
their policies, and the reference returns used for normalised scores. ``collect`` keeps it
up to date; ``build`` adds statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.envs.base import EnvSpec
from llmca_data.errors import MetadataError, SchemaVersionError
from llmca_data.layout import INFO_PATH
from llmca_data.reference import reference_returns
from llmca_data.rollout import package_versions
from llmca_data.schema import credit_column
from llmca_data.shards import write_json_atomic
from llmca_data.tiers import tier_spec


def load_info(root: Path) -> dict[str, Any]:
    """Read ``meta/info.json`` (an empty skeleton when absent) and check its schema version.

    Raises:
        MetadataError: the file is not JSON or not shaped as this package writes it.
        SchemaVersionError: it was written for another schema version.
    """
    path = root / INFO_PATH
    if not path.exists():
        return {"schema_version": SCHEMA_VERSION, "envs": {}}
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{path}: unreadable or not JSON ({exc}); {_RESTORE}") from exc
    problem = _shape_problem(info)
    if problem:
        raise MetadataError(f"{path}: malformed info ({problem}); {_RESTORE}")
    version = info.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{root} has schema_version {version}, this llmca-data {__version__} reads {SCHEMA_VERSION}; "
            f"install the llmca-data version recorded in {path} (package_version "
            f"{info.get('package_version', 'unknown')})"
        )
    return info


_RESTORE = "restore it from the Hub (`llmca download`) or re-run `llmca collect` into a new directory"


def _shape_problem(info: Any) -> str | None:
    """What in a parsed ``meta/info.json`` is not the shape writers produce, or None."""
    if not isinstance(info, dict):
        return f"a JSON object expected, found {type(info).__name__}"
    for key in ("envs", "critics"):
        value = info.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            return f"{key!r} must map names to objects"
    for env_id, env in info.get("envs", {}).items():
        if not isinstance(env.get("spec", {}), dict) or not isinstance(env.get("tiers", {}), dict):
            return f"envs.{env_id}: 'spec' and 'tiers' must be objects"
    return None


def spec_to_dict(spec: EnvSpec) -> dict[str, Any]:
    out = asdict(spec)
    out["agent_ids"] = list(spec.agent_ids)
    return out


def spec_from_info(env: dict[str, Any]) -> EnvSpec:
    """Rebuild an ``EnvSpec`` from its ``meta/info.json`` entry (no env package needed)."""
    try:
        raw = dict(env["spec"])
        raw.pop("agent_ids", None)
        for key in ("action_names", "obs_features", "state_features"):
            raw[key] = tuple(raw[key])
        return EnvSpec(**raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"{INFO_PATH}: malformed env spec ({exc!r}); {_RESTORE}") from exc


def record_collection(
    root: Path, spec: EnvSpec, tier: str, policy_ids: list[str], executor: str = "local"
) -> dict[str, Any]:
    """Add one env/tier collection to ``meta/info.json`` (atomically) and return the document.

    ``executor`` (``local`` or ``ray``) is the one that played this run's episodes."""
    info = load_info(root)
    env = info["envs"].setdefault(spec.env_id, {})
    if env.get("spec", {}).get("kwargs", spec.kwargs) != spec.kwargs:
        raise ValueError(
            f"{root} already holds {spec.env_id} built with kwargs {env['spec']['kwargs']}, not {spec.kwargs}; "
            "collect other env kwargs into another directory"
        )
    env["spec"] = spec_to_dict(spec)
    env["reference_returns"] = reference_returns(spec.env_id)
    tiers = env.setdefault("tiers", {})
    entry = tiers.setdefault(tier, {**tier_spec(tier).to_dict(), "policy_ids": []})
    entry["policy_ids"] = sorted(set(entry["policy_ids"]) | set(policy_ids))
    entry["executor"] = executor
    info.update(schema_version=SCHEMA_VERSION, package_version=__version__, versions=package_versions())
    write_json_atomic(root / INFO_PATH, info)
    return info


def record_recipe(root: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Record the resolved recipe that built the dataset in ``meta/info.json`` (atomically)."""
    info = load_info(root)
    info["recipe"] = recipe
    write_json_atomic(root / INFO_PATH, info)
    return info


def record_critic(info: dict[str, Any], critic_id: str, params: dict[str, Any], executor: str = "local") -> None:
    """Record a critic's provenance in the ``info`` document: its credit column, params, package version
    and the executor (``local`` or ``ray``) that computed the credits."""
    info.setdefault("critics", {})[critic_id] = {
        "column": credit_column(critic_id),
        "params": params,
        "package_version": __version__,
        "executor": executor,
    }


def critic_columns(info: dict[str, Any]) -> dict[str, str]:
    """Credit column → critic id, as the critics recorded in ``info`` spell their ids."""
    return {credit_column(cid): cid for cid in info.get("critics", {})}
