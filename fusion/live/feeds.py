"""Live sources read on their own threads into bounded display queues, and frame times on the
session clock.

Each source (:mod:`omnimocap.capture.sources`) delivers its frames on its capture thread; a
:class:`SourceFeed` hands every frame to a hook first (the recorder, which must see them all) and
then to a :class:`DropOldestQueue` that the live pipeline drains (the display, which may drop them).
``released_wall`` is ``time.perf_counter()`` when a frame left its capture thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable

from omnimocap.capture.rig import Rig
from omnimocap.capture.sources import KinectFrame, PanoFrame, Source, SourceHealth


class DropOldestQueue:
    """A bounded FIFO that drops its oldest item when full and counts what it dropped.

    Display data goes stale; a consumer that falls behind should see the newest frames, and the
    memory used never grows with how far behind it is.
    """

    def __init__(self, maxlen: int):
        if maxlen < 1:
            raise ValueError(f"queue length must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self._items: deque = deque()
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._lock:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)

    def drain(self) -> list:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class Released:
    """A frame as it left its capture thread, at ``released_wall`` (``time.perf_counter()``)."""

    frame: KinectFrame | PanoFrame
    released_wall: float


class SourceFeed:
    """One source read on its own thread (``Source.start_async``) into a :class:`DropOldestQueue`.

    ``on_frame(source, frame)`` runs in the capture thread for every frame, before any can be
    dropped (the recorder hook); keep it short. ``on_end(source, reason)`` runs once the source
    ends on its own. ``dropped`` counts the frames the display never saw: pushed out of the full
    queue, or polled but skipped for a newer one (:meth:`count_skipped`).
    """

    def __init__(self, source: Source, queue_size: int,
                 on_frame: Callable[[Source, KinectFrame | PanoFrame], None] | None = None,
                 on_end: Callable[[Source, str], None] | None = None):
        self.source = source
        self.queue = DropOldestQueue(queue_size)
        self._on_frame, self._on_end = on_frame, on_end
        self._skipped = 0

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def dropped(self) -> int:
        return self.queue.dropped + self._skipped

    def start(self) -> None:
        self.source.start_async(self._frame, self._end)

    def stop(self) -> None:
        self.source.stop()

    def poll(self) -> list[Released]:
        """Frames that arrived since the last poll, oldest first (older ones may have been dropped)."""
        return self.queue.drain()

    def count_skipped(self, n: int) -> None:
        self._skipped += n

    def health(self) -> SourceHealth:
        """The source's counters, with the display's drops added to its own."""
        health = self.source.health()
        return replace(health, drops=health.drops + self.dropped)

    def _frame(self, frame: KinectFrame | PanoFrame) -> None:
        released = Released(frame, time.perf_counter())
        if self._on_frame is not None:
            self._on_frame(self.source, frame)
        self.queue.put(released)

    def _end(self, reason: str) -> None:
        if self._on_end is not None:
            self._on_end(self.source, reason)


def session_time(rig: Rig, name: str, frame: KinectFrame | PanoFrame) -> float:
    """A frame's time on the session clock (seconds): its device/camera time through the rig's time
    map for ``name``, or its host arrival time where the rig has none."""
    time_map = rig.time_maps.get(name)
    if time_map is None:
        return float(frame.host_time)
    return float(time_map.to_session(frame.stream_time))
