"""Segments written once: snapshots that name what did not change instead of copying it.

Bytewax snapshots a touched key whole, and a busy epoch touches every click shard of a tenant
and the tenant itself: with the state kept in segments that keep their pickled bytes
(`attribution.clicks`, `attribution.segments`) a snapshot re-pickles only what changed, but it
still *writes* every segment's bytes, so an epoch's snapshot bytes grew with the tenant's live
state (50 MB and more), not with what the epoch did. The vault is the incremental checkpoint of
stream processors that keep large state (Flink's RocksDB incremental checkpoints share the
unchanged SST files between checkpoints): a segment that did not change since it was last
snapshotted is written once, as a file of its own, and every later snapshot holds its name
(36 bytes) instead of its bytes. A snapshot's bytes are then the open segments and whatever
changed in the epoch.

**Where and how.** A directory beside bytewax's recovery partitions (`Settings.segment_dir`,
`REFSTREAM_SEGMENT_DIR`; `refstream dataflow run --recovery-dir D` defaults it to
`D/segments`), with the same sharing rules: every process that may resume a key must be able
to read it. A segment file is written under
a fresh random name (never overwritten, never shared by two segments), to a temporary name,
flushed to disk (`fsync`) and renamed, *before* the snapshot that names it is returned to
bytewax, so a committed snapshot never names a file that is not durable.

**Retiring.** A segment that leaves the state (expired, merged into a larger one, or changed:
its new bytes get a new name) is *retired*: its file is renamed `NAME.retired-<wall ms>` and
deleted by a later sweep once `grace_ms` (1 hour by default) has passed, far beyond any epoch:
bytewax resumes from the latest committed epoch, whose snapshots no longer name it. A resume
that still names a retired file (from an older epoch, within the grace) takes it back. A file
deleted after the grace cannot be recovered: resuming snapshots older than that is refused
with `VaultError`, and the state is rebuilt by `refstream replay` (see the README).

A process without a vault (tests, replays, runs without recovery) inlines every segment as
before; a state snapshotted inline resumes with or without a vault, and a state that names
vault files needs the vault it was written with.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

RETIRED = ".retired-"
GRACE_MS = 3_600_000
SWEEP_EVERY_MS = 60_000


class VaultError(RuntimeError):
    """A snapshot names a segment file that is not there (see the module docstring)."""


class Vault:
    """Segment files in `root` (see the module docstring). Counts what it writes."""

    def __init__(self, root: Path, grace_ms: int = GRACE_MS) -> None:
        self.root = root
        self.grace_ms = grace_ms
        self.written_bytes = 0
        self.written_files = 0
        self._swept_ms = 0
        root.mkdir(parents=True, exist_ok=True)

    def put(self, packed: bytes) -> str:
        """Write `packed` durably under a new name; returns the name."""
        name = uuid.uuid4().hex
        path = self.root / name
        temporary = self.root / f".{name}.tmp"
        with temporary.open("wb") as file:
            file.write(packed)
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(path)
        descriptor = os.open(self.root, os.O_RDONLY)  # the new name, durable too
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self.written_bytes += len(packed)
        self.written_files += 1
        self.sweep()
        return name

    def get(self, name: str) -> bytes:
        path = self.root / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        for retired in self.root.glob(f"{name}{RETIRED}*"):  # named again: take it back
            retired.rename(path)
            return path.read_bytes()
        raise VaultError(
            f"segment {name} is not in {self.root}: the snapshot being resumed is older than"
            f" the vault keeps retired segments ({self.grace_ms // 60_000} min); rebuild the"
            " state from the archive (`refstream replay`)"
        )

    def retire(self, name: str, now_ms: int | None = None) -> None:
        now_ms = _now_ms() if now_ms is None else now_ms
        path = self.root / name
        # (missing: retired already by a state resumed twice, or never written here)
        with contextlib.suppress(FileNotFoundError):
            path.rename(self.root / f"{name}{RETIRED}{now_ms}")

    def sweep(self, now_ms: int | None = None, *, force: bool = False) -> int:
        """Delete retired files older than the grace; at most once a minute unless `force`.
        Returns how many were deleted."""
        now_ms = _now_ms() if now_ms is None else now_ms
        if not force and now_ms - self._swept_ms < SWEEP_EVERY_MS:
            return 0
        self._swept_ms = now_ms
        deleted = 0
        for path in self.root.glob(f"*{RETIRED}*"):
            retired_ms = int(path.name.rsplit(RETIRED, 1)[1])
            if now_ms - retired_ms >= self.grace_ms:
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_current: Vault | None = None


def configure(root: Path | None, grace_ms: int = GRACE_MS) -> Vault | None:
    """Use a vault in `root` for this process's snapshots from now on (None: inline)."""
    global _current
    _current = Vault(root, grace_ms) if root is not None else None
    return _current


def current() -> Vault | None:
    return _current


class Segment(Protocol):
    """What the vault keeps of a segment (`attribution.clicks.Segment`,
    `attribution.segments._Segment`): its pickled bytes until it changes, and its file's name."""

    name: str | None
    packed: bytes | None

    def pack(self) -> bytes: ...


def items(segments: Sequence[Segment]) -> list[bytes | str]:
    """What a snapshot holds of `segments`: each one's bytes or, with a vault, the file name of
    every one but the last (the one that still changes), each written once. A written segment's
    bytes leave memory: its name is enough."""
    into = _current
    if into is None:
        return [segment.pack() for segment in segments]
    out: list[bytes | str] = []
    for segment in segments[:-1]:
        if segment.name is None:
            segment.name = into.put(segment.pack())
            segment.packed = None
        out.append(segment.name)
    out.extend(segment.pack() for segment in segments[-1:])
    return out


def release(segment: Segment) -> None:
    """`segment` changed or left the state: its file, if it has one, is retired."""
    if segment.name is not None:
        if _current is not None:
            _current.retire(segment.name)
        segment.name = None


def restored(segment: Segment, item: bytes | str, packed: bytes) -> None:
    """`segment` was read from a snapshot's `item` (its bytes `packed`): it keeps the file's
    name, or the inline bytes."""
    if isinstance(item, str):
        segment.name = item
    else:
        segment.packed = packed


def load(item: bytes | str) -> bytes:
    """A segment's bytes from a snapshot's item: inline bytes, or a vault file's name."""
    if isinstance(item, bytes):
        return item
    vault = _current
    if vault is None:
        raise VaultError(
            f"the snapshot names segment file {item}, but this process has no segment vault:"
            " run with the segment directory it was written with (REFSTREAM_SEGMENT_DIR;"
            " `refstream dataflow run --recovery-dir D` uses D/segments)"
        )
    return vault.get(item)
