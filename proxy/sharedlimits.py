"""GCRA state shared by the gateway's worker processes, so a rate limit holds across all of them.

One theoretical arrival time (TAT) per key, in a fixed-size open-addressing table in a shared
mapping of an anonymous in-memory file (memfd) that forked workers inherit. A check locks the key's probe
window with a POSIX record lock (`fcntl.lockf`): the kernel releases it if the holder dies, so a
killed worker cannot wedge the others, as a semaphore held at death would. A slot whose TAT has
passed is free (its key is back to a full bucket, the same state as a key never seen), so the table
needs no expiry sweep; when all of a window's slots are in use the one nearest to expiry is reused
(that key gets a full bucket early: a bounded leniency, never a false 429).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
from typing import Final

from proxy.ratelimit import gcra_step

_SLOT: Final = struct.Struct("<qd")  # key hash, TAT (monotonic seconds: one clock for all processes)
PROBE: Final = 8  # slots per probe window


class SharedTatTable:
    """Theoretical arrival times by key hash, shared by the processes forked after it was made."""

    def __init__(self, slots: int = 1 << 16) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        fd = _anonymous_file()
        size = (slots + PROBE) * _SLOT.size  # windows near the end run past `slots`, not around
        os.ftruncate(fd, size)
        self._fd = fd
        self._map = mmap.mmap(fd, size)

    def take(self, key_hash: int, now: float, interval: float, tolerance: float) -> tuple[bool, float]:
        """One GCRA step for `key_hash`: (allowed, the key's TAT before this request, at least `now`)."""
        key_hash = key_hash or 1  # 0 marks a never-used slot
        offset = (key_hash % self.slots) * _SLOT.size
        window = PROBE * _SLOT.size
        fcntl.lockf(self._fd, fcntl.LOCK_EX, window, offset)
        try:
            slot, stored = self._find(key_hash, offset, now)
            allowed, tat = gcra_step(stored, now, interval, tolerance)
            if allowed:
                _SLOT.pack_into(self._map, slot, key_hash, tat + interval)
            return allowed, tat
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, window, offset)

    def _find(self, key_hash: int, offset: int, now: float) -> tuple[int, float]:
        """The key's slot and TAT in the window at `offset`; for a new key the slot nearest to
        expiry (a free one if any) and a fresh TAT."""
        reuse, reuse_tat = offset, float("inf")
        for slot in range(offset, offset + PROBE * _SLOT.size, _SLOT.size):
            stored, tat = _SLOT.unpack_from(self._map, slot)  # most keys sit in their first slot
            if stored == key_hash:
                return slot, tat
            if tat < reuse_tat:
                reuse, reuse_tat = slot, tat
        return reuse, now

    def close(self) -> None:
        """Unmap and close (other processes keep their own mapping)."""
        self._map.close()
        os.close(self._fd)


def _anonymous_file() -> int:
    """A descriptor of a file without a name, freed with the last process that holds it."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("gatewatch-ratelimits", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as file:  # elsewhere: an unlinked temporary file
        return os.dup(file.fileno())
