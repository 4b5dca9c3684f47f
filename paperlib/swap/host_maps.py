"""The fitted maps ``A_i`` on the host, copied from the devices only when read.

Pass 1 solves every ``A_i`` (eq. 12) where its statistics live, usually a GPU; pass 2 and the
table use them there.  The host needs them only for what leaves the process (the cache file
``fit.npz``, a notebook reading ``fit.A``): ``L d^2`` float64 numbers, 470 MB at GPT-2 Large and
4.3 GB at Llama-3-8B.  Copied eagerly, one layer after another into fresh pageable memory, that
took 0.28 s of a 2.2 s GPT-2 Large run and 3.5 s of a 14 s Llama-3-8B run on an H100
(``bench/README.md`` section 5).  :class:`HostMaps` copies them once, on first read, on a side
stream of each device that waits only for the solves (an event recorded when pass 1 ended), so a
reader in another thread (:class:`paperlib.swap.pipeline.FitSaver`) copies and writes
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
                copier = _PinnedCopier()
                for i, t in enumerate(self._tensors or []):
                    dest = torch.from_numpy(host[i])
                    if t.device.type == "cuda":
                        copier.copy(t, dest, self._ready[t.device])
                    else:
                        dest.copy_(t)
                copier.finish()
                self._host, self._tensors = host, None
            return self._host

    def __getitem__(self, i):  # type: ignore[override]
        return self.array()[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.array())


class _PinnedCopier:
    """Device -> pageable host copies through two small pinned buffers, on a side stream.

    A copy into pageable memory is staged by the driver, which on an H200 stalled the thread
    that launches pass 2's kernels for as long as the copy took; here the DMA goes into pinned
    memory (asynchronous, the device's copy engine) and the CPU moves each piece on to its
    destination while the next piece is in flight.
    """

    PIECE = 4 * 2**20  # float64 numbers per piece: 32 MiB

    def __init__(self):
        self._bufs: dict[torch.device, list[torch.Tensor]] = {}
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._turn = 0
        self._pending: tuple[torch.cuda.Event, torch.Tensor, torch.Tensor] | None = None

    def copy(self, src: torch.Tensor, dest: torch.Tensor, ready: torch.cuda.Event) -> None:
        dev = src.device
        if dev not in self._streams:
            self._streams[dev] = torch.cuda.Stream(dev)
            self._streams[dev].wait_event(ready)  # the work that made the maps, nothing queued later
            self._bufs[dev] = [torch.empty(self.PIECE, dtype=src.dtype, pin_memory=True) for _ in range(2)]
        with torch.cuda.stream(self._streams[dev]):
            # solvers return column-major maps: the row-major copy must be made on the side stream
            # too (on the default stream it would queue behind pass 2 while the side stream read it)
            flat_src = src.contiguous().view(-1)
        flat_dest = dest.view(-1)
        for start in range(0, flat_src.numel(), self.PIECE):
            n = min(self.PIECE, flat_src.numel() - start)
            # a buffer is reused two pieces later: its previous piece was moved on by then
            buf = self._bufs[dev][self._turn % 2][:n]
            self._turn += 1
            with torch.cuda.stream(self._streams[dev]):
                buf.copy_(flat_src[start:start + n], non_blocking=True)
                done = torch.cuda.Event()
                done.record()
            self._drain()
            self._pending = (done, buf, flat_dest[start:start + n])

    def _drain(self) -> None:
        if self._pending is not None:
            done, buf, dest = self._pending
            done.synchronize()
            dest.copy_(buf)
            self._pending = None

    def finish(self) -> None:
        self._drain()
