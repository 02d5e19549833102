"""Checks of a submitted checkpoint file, by hand, before any tensor is deserialised.

Input: a path that should hold a safetensors file, and the tensors an allowlisted
architecture expects. Output: the parsed header (``SafetensorsHeader``) or the problems
found; once every cheap check passed, ``scan_checkpoint`` reads the tensor bytes once, as raw
integers, for the file's sha256 and to refuse non-finite float weights. Nothing here calls
``safetensors`` or ``torch.load``; ``read_header`` reads only the first ``8 + header length``
bytes.

The safetensors format: an 8-byte little-endian u64 ``N``, then ``N`` bytes of UTF-8 JSON
(an object: ``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets":
[begin, end]}}``), then the byte buffer; offsets are relative to the buffer, each tensor's
bytes are ``numel * itemsize``, and the tensors tile the buffer exactly (contiguous, no
overlap, no gap, nothing past the end).

Every file is opened through ``open_untrusted`` (no final symlink, a regular file with a
single link: a hard link could expose a file from outside the submission). No message
repeats bytes of a header that did not parse (a hard-linked ``/etc/passwd`` must not come
back as a "header length"), and values of one that did are shortened (``shown``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAX_HEADER_BYTES = 1 << 20
"""Largest safetensors JSON header accepted (1 MiB; ours are a few KiB)."""
MAX_CHECKPOINT_BYTES = 1 << 30
"""Largest checkpoint file accepted (1 GiB)."""
MAX_RANK = 8
"""Most dimensions a tensor may have (ours have 1 or 2)."""
SCAN_CHUNK = 1 << 22
"""Bytes read at a time by ``scan_checkpoint`` (a multiple of every item size)."""
SHOWN_CHARS = 60
"""Longest value from a parsed header repeated in a message."""

DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}  # fmt: skip
"""Every safetensors dtype → bytes per element."""
NON_FINITE_BITS: dict[str, tuple[str, int]] = {
    "F8_E5M2": ("<u1", 0x7C), "F8_E4M3": ("<u1", 0x7F), "F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80),
    "F32": ("<u4", 0x7F80_0000), "F64": ("<u8", 0x7FF0_0000_0000_0000),
}  # fmt: skip
"""Float dtype → (its bits as an unsigned numpy dtype, mask): a value is NaN or ±inf exactly when
every bit of the mask is set (the exponent all ones; for F8_E4M3, which has no inf, S.1111.111)."""
MAGIC = {b"\x80": "a pickle", b"PK\x03\x04": "a zip (torch.save) archive"}
"""Leading bytes of formats that must never be opened."""
RENAMED_FIX = "checkpoints must be safetensors: save with safetensors.torch.save_file, never torch.save or pickle"
LINK_FIX = "copy the file into the submission (cp), never link it (ln)"


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


def shown(value: Any) -> str:
    """``repr(value)``, cut to ``SHOWN_CHARS``: how a value from a submitted file appears in a message."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def open_untrusted(path: Path) -> tuple[BinaryIO | None, str | None]:
    """Open a submitted file for reading: (the open file, None), or (None, why it is refused).

    The last component is opened without following a symlink (``O_NOFOLLOW``, and
    ``O_NONBLOCK`` so a FIFO cannot hang the check) and the *opened* file is checked with
    ``fstat``: a regular file with exactly one link. A second link (``ln /etc/passwd
    seed0.safetensors``) would let a submission read a file from outside its directory.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return None, f"cannot be opened ({exc.strerror}); it must be a regular file, not a symlink"
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "is not a regular file"
        return None, (f"has {info.st_nlink} hard links: a hard link can expose a file from outside the submission "
                      f"directory, so only files with one link are read; {LINK_FIX}")  # fmt: skip
    return os.fdopen(fd, "rb"), None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {shown(key)} in the header")
        out[key] = value
    return out


def _is_uint(value: Any) -> bool:
    """A non-negative int (not a bool) no larger than a checkpoint may be (bounds every product)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CHECKPOINT_BYTES


def _entry(name: str, raw: Any) -> tuple[TensorInfo | None, str | None]:
    """One tensor entry checked alone (dtype, shape, byte count); offsets are checked together later."""
    what = f"tensor {shown(name)}"
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        return None, f"{what}: an entry must be an object with exactly dtype, shape and data_offsets"
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        return None, f"{what}: unknown dtype {shown(dtype)}"
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_uint(d) for d in shape):
        return None, (f"{what}: shape must be a list of non-negative ints (at most MAX_RANK={MAX_RANK} of them, "
                      f"each at most MAX_CHECKPOINT_BYTES), got {shown(shape)}")  # fmt: skip
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        return None, f"{what}: data_offsets must be [begin, end] of non-negative ints, got {shown(offsets)}"
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    if end < begin or end - begin != nbytes:
        return None, f"{what}: data_offsets {offsets} span {end - begin} bytes, {dtype}{shape} needs {nbytes}"
    return TensorInfo(dtype, tuple(shape), begin, end), None


def _tiling(tensors: dict[str, TensorInfo], buffer_bytes: int) -> list[str]:
    """Problems with how the tensors cover the byte buffer (overlap, gap, past the end)."""
    problems: list[str] = []
    cursor, previous = 0, "the start of the buffer"
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.end > buffer_bytes:
            problems.append(f"tensor {shown(name)}: data_offsets end {info.end} is past the end of the file "
                            f"(buffer of {buffer_bytes} bytes)")  # fmt: skip
        if info.begin < cursor:
            problems.append(f"tensor {shown(name)}: data_offsets [{info.begin}, {info.end}] overlap {previous}")
        elif info.begin > cursor:
            problems.append(f"tensor {shown(name)}: gap of {info.begin - cursor} bytes before it in the buffer")
        cursor, previous = max(cursor, info.end), f"tensor {shown(name)}"
    if not problems and cursor != buffer_bytes:
        problems.append(f"the tensors cover {cursor} bytes but the buffer holds {buffer_bytes} (trailing bytes)")
    return problems


def _raw_header(f: BinaryIO, size: int) -> tuple[bytes | None, str | None]:
    """The header's JSON bytes, or why the file cannot be safetensors (its bytes never repeated)."""
    head = f.read(9)
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    # A plausible safetensors start (sane length, header opens with "{") wins over a magic
    # number: a header length whose low byte is 0x80 starts with a pickle's first byte.
    if not (0 < n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"):
        for magic, what in MAGIC.items():
            if head.startswith(magic):
                return None, f"{what} file renamed .safetensors; {RENAMED_FIX}"
    if n < 0:
        return None, f"{size} bytes: too short to be a safetensors file (no 8-byte header length)"
    if n > MAX_HEADER_BYTES:
        return None, f"the header length field exceeds the limit MAX_HEADER_BYTES={MAX_HEADER_BYTES}; {RENAMED_FIX}"
    if n > size - 8:
        return None, f"the header length field runs past the end of the file ({size} bytes); {RENAMED_FIX}"
    f.seek(8)
    return f.read(n), None


def _parse(raw: bytes) -> tuple[Any, str | None]:
    """The header's JSON value, or a problem that names a position, never the bytes found there."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"header is not valid UTF-8 JSON (invalid UTF-8 at header byte {exc.start}); {RENAMED_FIX}"
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates), None
    except json.JSONDecodeError as exc:
        return None, f"header is not valid UTF-8 JSON ({exc.msg} at header byte {exc.pos}); {RENAMED_FIX}"
    except (ValueError, RecursionError) as exc:  # a duplicate key (shortened), or nesting/number limits
        return None, f"header is not valid UTF-8 JSON ({str(exc)[:120]}); {RENAMED_FIX}"


def read_header(path: Path) -> tuple[SafetensorsHeader | None, list[str]]:
    """Parse and check the safetensors header of ``path`` without deserialising any tensor.

    Returns:
        The header (None when it is unusable) and the problems found, each a sentence.
    """
    f, refused = open_untrusted(path)
    if f is None:
        return None, [f"the file {refused}"]
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CHECKPOINT_BYTES:
            return None, [f"{size} bytes is more than the {MAX_CHECKPOINT_BYTES} a checkpoint may have"]
        raw, problem = _raw_header(f, size)
    if raw is None:
        return None, [str(problem)]
    header, problem = _parse(raw)
    if problem is not None:
        return None, [problem]
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
    buffer_bytes = size - 8 - len(raw)
    if not problems:
        problems = _tiling(tensors, buffer_bytes)
    if problems:
        return None, problems
    return SafetensorsHeader(tensors, metadata, len(raw), buffer_bytes), []


def compare_tensors(header: SafetensorsHeader, expected: dict[str, tuple[str, tuple[int, ...]]]) -> list[str]:
    """Problems where the header's names, dtypes or shapes differ from ``expected`` (name → (dtype, shape))."""
    problems = [f"missing tensor {name!r} ({dtype}{list(shape)})" for name, (dtype, shape) in expected.items()
                if name not in header.tensors]  # fmt: skip
    problems += [f"unexpected tensor {shown(name)}; expected only: {', '.join(sorted(expected))}"
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


def _non_finite(dtype: str, data: bytes) -> int:
    """How many NaN or ±inf values ``data`` (whole items of ``dtype``) holds; 0 for integer dtypes."""
    if dtype not in NON_FINITE_BITS:
        return 0
    as_uint, mask = NON_FINITE_BITS[dtype]
    bits = np.frombuffer(data, dtype=as_uint)
    return int(np.count_nonzero((bits & np.array(mask, dtype=as_uint)) == mask))


def scan_checkpoint(path: Path, header: SafetensorsHeader) -> tuple[str | None, list[str]]:
    """Read a checked checkpoint once: its sha256, and a problem per float tensor holding NaN or ±inf.

    Values are read as unsigned integers (their bit patterns), never as tensors. Call it only
    after every cheap check passed: it reads the whole file.

    Returns:
        The sha256 of the file's bytes (None when it cannot be read as checked) and the problems.
    """
    f, refused = open_untrusted(path)
    if f is None:
        return None, [f"the file {refused}"]
    digest = hashlib.sha256()
    problems: list[str] = []
    with f:
        expected_size = 8 + header.header_bytes + header.buffer_bytes
        if os.fstat(f.fileno()).st_size != expected_size:
            return None, [f"{path.name} changed while it was being checked; submit it again, unchanged"]
        digest.update(f.read(8 + header.header_bytes))
        for name, info in sorted(header.tensors.items(), key=lambda kv: kv[1].begin):
            bad, left = 0, info.end - info.begin
            while left > 0:
                chunk = f.read(min(left, SCAN_CHUNK))
                if not chunk:
                    return None, [f"{path.name} changed while it was being checked; submit it again, unchanged"]
                digest.update(chunk)
                bad, left = bad + _non_finite(info.dtype, chunk), left - len(chunk)
            if bad:
                numel = math.prod(info.shape)
                problems.append(f"tensor {name!r} holds {bad} non-finite value(s) (NaN or ±inf) of {numel}; "
                                "every float weight must be finite")  # fmt: skip
    return digest.hexdigest(), problems
