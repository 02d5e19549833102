"""Checks of a submitted checkpoint file, by hand, before any tensor is deserialised.

Input: a path that should hold a safetensors file, and the tensors an allowlisted
architecture expects. Output: the parsed header (``SafetensorsHeader``) or the problems
found; nothing here calls ``safetensors`` or ``torch.load``, and only the first
``8 + header length`` bytes are read.

The safetensors format: an 8-byte little-endian u64 ``N``, then ``N`` bytes of UTF-8 JSON
(an object: ``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets":
[begin, end]}}``), then the byte buffer; offsets are relative to the buffer, each tensor's
bytes are ``numel * itemsize``, and the tensors tile the buffer exactly (contiguous, no
overlap, no gap, nothing past the end).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 1 << 20
"""Largest safetensors JSON header accepted (1 MiB; ours are a few KiB)."""
MAX_CHECKPOINT_BYTES = 1 << 30
"""Largest checkpoint file accepted (1 GiB)."""

DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}  # fmt: skip
"""Every safetensors dtype → bytes per element."""
MAGIC = {b"\x80": "a pickle", b"PK\x03\x04": "a zip (torch.save) archive"}
"""Leading bytes of formats that must never be opened."""
RENAMED_FIX = "checkpoints must be safetensors: save with safetensors.torch.save_file, never torch.save or pickle"


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: dtype name, shape and ``[begin, end)`` in the byte buffer."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A header that passed every structural check."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_bytes: int
    buffer_bytes: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in the header")
        out[key] = value
    return out


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(name: str, raw: Any) -> tuple[TensorInfo | None, str | None]:
    """One tensor entry checked alone (dtype, shape, byte count); offsets are checked together later."""
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        return None, f"tensor {name!r}: an entry must be an object with exactly dtype, shape and data_offsets"
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if dtype not in DTYPE_BYTES:
        return None, f"tensor {name!r}: unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        return None, f"tensor {name!r}: shape must be a list of non-negative ints, got {shape!r}"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        return None, f"tensor {name!r}: data_offsets must be [begin, end] of non-negative ints, got {offsets!r}"
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    if end < begin or end - begin != nbytes:
        return None, f"tensor {name!r}: data_offsets {offsets} span {end - begin} bytes, {dtype}{shape} needs {nbytes}"
    return TensorInfo(dtype, tuple(shape), begin, end), None


def _tiling(tensors: dict[str, TensorInfo], buffer_bytes: int) -> list[str]:
    """Problems with how the tensors cover the byte buffer (overlap, gap, past the end)."""
    problems: list[str] = []
    cursor, previous = 0, "the start of the buffer"
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.end > buffer_bytes:
            problems.append(f"tensor {name!r}: data_offsets end {info.end} is past the end of the file "
                            f"(buffer of {buffer_bytes} bytes)")  # fmt: skip
        if info.begin < cursor:
            problems.append(f"tensor {name!r}: data_offsets [{info.begin}, {info.end}] overlap {previous}")
        elif info.begin > cursor:
            problems.append(f"tensor {name!r}: gap of {info.begin - cursor} bytes before it in the buffer")
        cursor, previous = max(cursor, info.end), f"tensor {name!r}"
    if not problems and cursor != buffer_bytes:
        problems.append(f"the tensors cover {cursor} bytes but the buffer holds {buffer_bytes} (trailing bytes)")
    return problems


def read_header(path: Path) -> tuple[SafetensorsHeader | None, list[str]]:
    """Parse and check the safetensors header of ``path`` without deserialising any tensor.

    Returns:
        The header (None when it is unusable) and the problems found, each a sentence.
    """
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        return None, [f"{size} bytes is more than the {MAX_CHECKPOINT_BYTES} a checkpoint may have"]
    with path.open("rb") as f:
        head = f.read(9)
        n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
        # A plausible safetensors start (sane length, header opens with "{") wins over a magic
        # number: a header length whose low byte is 0x80 starts with a pickle's first byte.
        if not (0 < n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"):
            for magic, what in MAGIC.items():
                if head.startswith(magic):
                    return None, [f"{what} file renamed .safetensors; {RENAMED_FIX}"]
        if n < 0:
            return None, [f"{size} bytes: too short to be a safetensors file (no 8-byte header length)"]
        if n > MAX_HEADER_BYTES:
            return None, [f"header length {n} exceeds the limit MAX_HEADER_BYTES={MAX_HEADER_BYTES}; {RENAMED_FIX}"]
        if n > size - 8:
            return None, [f"header length {n} runs past the end of the file ({size} bytes)"]
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, [f"header is not valid UTF-8 JSON ({str(exc)[:120]}); {RENAMED_FIX}"]
    if not isinstance(header, dict):
        return None, [f"header must be a JSON object, got {type(header).__name__}"]
    problems: list[str] = []
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append("__metadata__ must be an object of string values")
        metadata = {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        info, problem = _entry(name, entry)
        if info is not None:
            tensors[name] = info
        if problem is not None:
            problems.append(problem)
    buffer_bytes = size - 8 - n
    if not problems:
        problems = _tiling(tensors, buffer_bytes)
    if problems:
        return None, problems
    return SafetensorsHeader(tensors, metadata, n, buffer_bytes), []


def compare_tensors(header: SafetensorsHeader, expected: dict[str, tuple[str, tuple[int, ...]]]) -> list[str]:
    """Problems where the header's names, dtypes or shapes differ from ``expected`` (name → (dtype, shape))."""
    problems = [f"missing tensor {name!r} ({dtype}{list(shape)})" for name, (dtype, shape) in expected.items()
                if name not in header.tensors]  # fmt: skip
    problems += [f"unexpected tensor {name!r}; expected only: {', '.join(sorted(expected))}"
                 for name in header.tensors if name not in expected]  # fmt: skip
    for name, info in header.tensors.items():
        if name not in expected:
            continue
        dtype, shape = expected[name]
        if info.dtype != dtype:
            problems.append(f"tensor {name!r} has dtype {info.dtype}, the architecture needs {dtype}")
        if info.shape != shape:
            problems.append(f"tensor {name!r} has shape {list(info.shape)}, the architecture needs {list(shape)}")
    return problems
