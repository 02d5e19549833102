"""Error types. Every message says what went wrong and how to fix it."""

from __future__ import annotations


class LlmcaError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownEnvError(LlmcaError, ValueError):
    """An env id that does not parse or is not registered."""


class UnknownTierError(LlmcaError, ValueError):
    """A tier name outside the contract tiers."""


class ReplayMismatchError(LlmcaError, RuntimeError):
    """Re-simulating an episode did not reproduce the stored observations."""


class DatasetLockedError(LlmcaError, RuntimeError):
    """Another process holds the writer lock of a dataset directory."""


class ShardError(LlmcaError, ValueError):
    """A shard is unreadable, corrupt, or does not match its schema or the manifest."""


class SchemaVersionError(LlmcaError, ValueError):
    """A dataset written with a schema version this package cannot read."""


class UnknownCriticError(LlmcaError, ValueError):
    """A critic id whose ``credit_<critic>`` column is not in the dataset."""


class MissingExtraError(LlmcaError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class OutputPathError(LlmcaError, OSError):
    """An output path cannot be written (it is a file, read-only, or its disk is full)."""


class DatasetNotFoundError(LlmcaError, FileNotFoundError):
    """A reading command was pointed at a directory that holds no dataset (nothing is created there)."""


class MetadataError(ShardError):
    """``meta/info.json`` or ``meta/manifest.json`` is not JSON or does not have the shape this package writes."""
