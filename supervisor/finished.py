"""Finished messages whose batched delete has not gone out yet, in memory the parent shares.

If a child dies between a job's end and the batched delete, the parent must delete that
message rather than release it to run again. The child used to tell the parent of every
finished job over the report pipe (a line, a write and a wake-up of the parent per message);
the parent only ever needs the answer once the child is dead. So each child gets an anonymous
shared mapping, made by the parent before the fork: the child writes a finished message into
a free slot and clears the slot once its delete went through, and the parent reads the slots
only after it has reaped the child, when nothing can change them any more.

A slot is marked used only after its id and run time are written, so a child killed mid-write
leaves a slot the parent skips, as if the job had not finished. ``add`` returns None when all
slots are taken or an id does not fit; the caller then reports that message over the pipe.
"""

from __future__ import annotations

import mmap
import struct

SLOTS = 512  # far above what a child holds finished at once: a flush is due at ten
SLOT_BYTES = 128
_HEAD = struct.Struct("<BBxxxxxxq")  # used, id length, run time in us (-1: did not run)
MAX_ID_BYTES = SLOT_BYTES - _HEAD.size


class FinishedLog:
    """One child's finished, not yet deleted messages: written by the child (from any of its
    threads: each slot has one owner), read by the parent after the child is gone."""

    def __init__(self, slots: int = SLOTS) -> None:
        self._map: mmap.mmap | None = mmap.mmap(-1, slots * SLOT_BYTES)  # MAP_SHARED
        self._free = list(range(slots - 1, -1, -1))  # pop() hands out slot 0 first

    # -- the child's side ---------------------------------------------------------------------

    def add(self, message_id: str, micros: int | None) -> int | None:
        """Record a finished message; its slot, or None if it did not fit."""
        data = message_id.encode()
        if len(data) > MAX_ID_BYTES or self._map is None:
            return None
        try:
            slot = self._free.pop()  # atomic: a slot has one owner from here to remove()
        except IndexError:
            return None
        at, view = slot * SLOT_BYTES, self._map
        _HEAD.pack_into(view, at, 0, len(data), -1 if micros is None else micros)
        view[at + _HEAD.size : at + _HEAD.size + len(data)] = data
        view[at] = 1  # used: only now is the slot whole
        return slot

    def remove(self, slot: int) -> None:
        """The message's delete went through: the parent need not know of it any more."""
        if self._map is None:
            return
        self._map[slot * SLOT_BYTES] = 0
        self._free.append(slot)

    # -- the parent's side --------------------------------------------------------------------

    def read(self) -> dict[str, float | None]:
        """Message id -> run time in seconds (None: a duplicate, not run), for every used
        slot. Only for a child that is gone: a live one may be writing."""
        if self._map is None:
            return {}
        found: dict[str, float | None] = {}
        view = self._map
        for at in range(0, len(view), SLOT_BYTES):
            if view[at] != 1:
                continue
            _, length, micros = _HEAD.unpack_from(view, at)
            start = at + _HEAD.size
            message_id = view[start : start + length].decode(errors="replace")
            found[message_id] = None if micros < 0 else micros / 1_000_000
        return found

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
