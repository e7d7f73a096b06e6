"""A bounded pool that computes inferences off the request loop.

MONAI Label runs ``/infer`` inside an ``async`` endpoint, so one long map holds the whole server:
``/info``, ``/train/`` status and cancel wait behind it. Here each inference runs in one of
``workers`` threads (numpy, scipy and torch release the GIL while they compute); at most ``queue``
more may wait, and a request beyond that is refused at once (HTTP 429 with ``Retry-After``) instead
of piling up. A client that waited ``timeout_s`` gets HTTP 503; a computation that has started
cannot be interrupted from Python, so it keeps its worker until it ends, and the pool stays bounded.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from fastapi import HTTPException


class InferPool:
    def __init__(self, workers: int, queue: int, timeout_s: float):
        self.workers, self.queue, self.timeout_s = int(workers), int(queue), float(timeout_s)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="qmri-infer")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting

    @property
    def admitted(self) -> int:
        return self._admitted

    def _release(self, _future=None) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on a worker; 429 when ``workers + queue`` requests are already admitted, 503
        after ``timeout_s``."""
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                raise HTTPException(
                    status_code=429,
                    detail=f"the server is busy: {self.workers} inferences running and {self.queue} waiting (the limit); retry later",
                    headers={"Retry-After": "10"},
                )
            self._admitted += 1
        try:
            future = self._executor.submit(fn)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)  # also runs when a waiting request is cancelled
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # frees the slot if it had not started
            raise HTTPException(
                status_code=503,
                detail=f"the map was not ready within the server's {self.timeout_s:.0f} s limit per request; use a smaller volume or a faster method, or retry later",
                headers={"Retry-After": "60"},
            ) from None
