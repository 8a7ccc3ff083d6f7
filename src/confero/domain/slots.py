"""Last-N video slots: which members' video the limited video m-lines of one room play carry.

Pure logic over stream ids and audio levels (RFC 6464: -dBov, 0 loudest .. 127 silence); no
media objects. `RoomPlayback` feeds it the room's members and, every level tick, their levels;
what it answers is the occupant of each slot, which the media plane then switches to.

The policy:

* a slot pinned to a member (`pin`) carries it while it is a member; a pin is never replaced;
* empty slots take the members without one, loudest first, then in join order;
* with a page (`set_page(offset, size)`, Ant Media's pagination) the unpinned slots carry the
  members of that page, in order, and levels do not move them;
* otherwise the loudest member without a slot replaces the quietest unpinned occupant only when
  it has been louder by `margin` for `switch_ticks` consecutive ticks, and only once that
  occupant has held its slot for `hold_ticks` level ticks after the one that gave it the slot;
  at most one replacement per tick. So
  tiles do not flap under noisy levels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SILENCE = 127


@dataclass
class SlotPolicy:
    """The occupants of `size` video slots, kept stable against noisy levels."""

    size: int
    switch_ticks: int = 3
    hold_ticks: int = 4
    margin: int = 6
    slots: list[str | None] = field(default_factory=list)
    pins: dict[int, str] = field(default_factory=dict)  # slot index -> stream id
    page: tuple[int, int] | None = None  # (offset, size) over the members, or None: loudest
    _held: list[int] = field(default_factory=list)  # ticks since each slot's occupant took it
    _streak: dict[str, int] = field(default_factory=dict)  # consecutive ticks a challenger won

    def __post_init__(self) -> None:
        self.resize(self.size)

    # -- commands ---------------------------------------------------------------------------

    def resize(self, size: int) -> None:
        self.size = max(0, size)
        self.slots = (self.slots + [None] * self.size)[: self.size]
        self._held = (self._held + [0] * self.size)[: self.size]
        self.pins = {i: s for i, s in self.pins.items() if i < self.size}

    def pin(self, index: int, stream_id: str) -> bool:
        """Keep `stream_id` in slot `index` (False if there is no such slot)."""
        if not 0 <= index < self.size:
            return False
        self.pins = {i: s for i, s in self.pins.items() if s != stream_id}
        self.pins[index] = stream_id
        return True

    def unpin(self, stream_id: str) -> bool:
        before = len(self.pins)
        self.pins = {i: s for i, s in self.pins.items() if s != stream_id}
        return len(self.pins) != before

    def set_page(self, offset: int, size: int) -> None:
        self.page = (max(0, offset), max(0, size))

    # -- the tick ---------------------------------------------------------------------------

    def update(self, members: Iterable[str], levels: Mapping[str, int] | None = None) -> bool:
        """Apply membership and (on a level tick) levels; True when an occupant changed."""
        order = list(dict.fromkeys(members))
        present = set(order)
        levels = levels or {}
        before = list(self.slots)
        if levels:  # a level tick: every occupant has held its slot one tick longer
            self._held = [held + 1 for held in self._held]
        self.pins = {i: s for i, s in self.pins.items() if s in present}
        # members that left free their slots; pins take theirs
        for i, occupant in enumerate(self.slots):
            if occupant is not None and occupant not in present:
                self._set(i, None)
        for i, stream_id in self.pins.items():
            if self.slots[i] != stream_id:
                if stream_id in self.slots:
                    self._set(self.slots.index(stream_id), None)
                self._set(i, stream_id)
        free = [i for i in range(self.size) if i not in self.pins]
        if self.page is not None:
            offset, size = self.page
            pinned = set(self.pins.values())
            wanted = [s for s in order if s not in pinned][offset : offset + size][: len(free)]
            keep = [i for i in free if self.slots[i] in wanted]
            for i in free:
                if i not in keep:
                    self._set(i, None)
            missing = [s for s in wanted if s not in self.slots]
            for i in free:
                if self.slots[i] is None and missing:
                    self._set(i, missing.pop(0))
        else:
            self._fill(free, order, levels)
            if levels:
                self._challenge(free, order, levels)
        return self.slots != before

    def _fill(self, free: list[int], order: list[str], levels: Mapping[str, int]) -> None:
        waiting = sorted(
            (s for s in order if s not in self.slots),
            key=lambda s: (levels.get(s, SILENCE), order.index(s)),
        )
        for i in free:
            if self.slots[i] is None and waiting:
                self._set(i, waiting.pop(0))

    def _challenge(self, free: list[int], order: list[str], levels: Mapping[str, int]) -> None:
        outside = [s for s in order if s not in self.slots]
        if not outside:
            self._streak.clear()
            return
        challenger = min(outside, key=lambda s: (levels.get(s, SILENCE), order.index(s)))
        # held for hold_ticks level ticks after the one that gave it the slot
        movable = [i for i in free if self.slots[i] is not None and self._held[i] > self.hold_ticks]
        self._streak = {challenger: self._streak.get(challenger, 0)}
        if not movable:
            return
        quietest = max(movable, key=lambda i: (levels.get(self.slots[i] or "", SILENCE), -i))
        occupant_level = levels.get(self.slots[quietest] or "", SILENCE)
        if levels.get(challenger, SILENCE) + self.margin <= occupant_level:
            self._streak[challenger] += 1
        else:
            self._streak[challenger] = 0
        if self._streak[challenger] >= self.switch_ticks:
            self._set(quietest, challenger)
            self._streak.clear()

    def _set(self, index: int, stream_id: str | None) -> None:
        if self.slots[index] != stream_id:
            self.slots[index] = stream_id
            self._held[index] = 0

    def dump(self) -> dict[str, object]:
        return {"size": self.size, "slots": list(self.slots), "pins": dict(self.pins), "page": self.page}


__all__ = ["SILENCE", "SlotPolicy"]
