"""The fitted maps ``A_i`` on the host, copied from the devices only when read.

Pass 1 solves every ``A_i`` (eq. 12) where its statistics live, usually a GPU; pass 2 and the
table use them there.  The host needs them only for what leaves the process (the cache file
``fit.npz``, a notebook reading ``fit.A``): ``L d^2`` float64 numbers, 470 MB at GPT-2 Large and
4.3 GB at Llama-3-8B.  Copied eagerly, one layer after another into fresh pageable memory, that
took 0.28 s of a 2.2 s GPT-2 Large run and 3.5 s of a 14 s Llama-3-8B run on an H100
(``bench/README.md`` section 5).  :class:`HostMaps` copies them once, on first read, on a side
stream of each device that waits only for the solves (an event recorded when pass 1 ended), so a
reader in another thread (:func:`paperlib.swap.pipeline.save_fit_in_background`) copies and writes
them while pass 2 computes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch


class HostMaps(Sequence):
    """A read-only list of ``n`` float64 ``(d, d)`` numpy arrays backed by device tensors.

    ``len`` and :attr:`shape` need no copy; the first item read copies all of them into one
    ``(n, d, d)`` array (thread-safe: a second reader waits for the first copy).  After the copy
    the device tensors are released.
    """

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self._tensors: list[torch.Tensor] | None = list(tensors)
        self._n = len(self._tensors)
        self._shape = tuple(self._tensors[0].shape) if self._tensors else (0, 0)
        self._host: np.ndarray | None = None
        self._lock = threading.Lock()
        # what the copies wait for: the work queued so far on each device (the solves), not what
        # the caller queues next (pass 2)
        self._ready: dict[torch.device, torch.cuda.Event] = {}
        for t in self._tensors:
            if t.device.type == "cuda" and t.device not in self._ready:
                ev = torch.cuda.Event()
                ev.record(torch.cuda.current_stream(t.device))
                self._ready[t.device] = ev

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of one map, ``(d, d)``."""
        return self._shape

    def array(self) -> np.ndarray:
        """All maps as one ``(n, d, d)`` float64 array (copied from the devices on first call;
        the items are views of it)."""
        with self._lock:
            if self._host is None:
                host = np.empty((self._n, *self._shape), dtype=np.float64)
                streams: dict[torch.device, torch.cuda.Stream] = {}
                for i, t in enumerate(self._tensors or []):
                    dest = torch.from_numpy(host[i])
                    if t.device.type == "cuda":
                        if t.device not in streams:
                            streams[t.device] = torch.cuda.Stream(t.device)
                            streams[t.device].wait_event(self._ready[t.device])
                        with torch.cuda.stream(streams[t.device]):
                            dest.copy_(t)  # into pageable memory: returns when copied
                    else:
                        dest.copy_(t)
                self._host, self._tensors = host, None
            return self._host

    def __getitem__(self, i):  # type: ignore[override]
        return self.array()[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.array())
