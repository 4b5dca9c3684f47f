"""Where the GPU waits: device-idle gaps in a profiler timeline (``export_chrome_trace``).

``bench_loraild_ddp.py --profile-steps 5 --trace`` writes one timeline per process
(``profiles/trace_*.json``).  This reads them and prints, per file, the window from the first to the
last device event, the time some kernel or copy runs (the union over streams), the idle rest, and
the longest gaps with the device events on either side, so a data-parallel step's extra time can be
told apart: waiting for the host, for the other process (an all-reduce kernel starting late), or
more device work.

Usage: ``python bench/checks/trace_gaps.py /tmp/ddp-bench/profiles/trace_*.json [--steps 5] [--top 10]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def device_events(trace: dict) -> list[tuple[float, float, str]]:
    """``(start_us, end_us, name)`` of every kernel, copy and memset, by start."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    out = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), e.get("name", "?"))
           for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS]
    return sorted(out)


def gaps(events: list[tuple[float, float, str]]) -> tuple[float, float, list[tuple[float, str, str]]]:
    """``(window_us, busy_us, gaps)``: busy is the union of the events' intervals; each gap is
    ``(length_us, event before, event after)``, longest first."""
    if not events:
        return 0.0, 0.0, []
    busy, found = 0.0, []
    cur_start, cur_end, cur_name = events[0]
    for start, end, name in events[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            found.append((start - cur_end, cur_name, name))
            cur_start, cur_end, cur_name = start, end, name
        elif end > cur_end:
            cur_end, cur_name = end, name
    busy += cur_end - cur_start
    return max(e[1] for e in events) - events[0][0], busy, sorted(found, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--steps", type=int, default=None, help="steps in the window (prints per-step figures)")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    for path in args.traces:
        window, busy, found = gaps(device_events(json.loads(Path(path).read_text())))
        per = f" = {window / 1e3 / args.steps:.2f} ms per step" if args.steps else ""
        idle = window - busy
        print(f"{path}: window {window / 1e3:.2f} ms{per}; device busy {busy / 1e3:.2f} ms, idle {idle / 1e3:.2f} ms "
              f"({100 * idle / max(window, 1e-9):.1f}%) in {len(found)} gaps")
        for length, before, after in found[: args.top]:
            print(f"  {length / 1e3:7.3f} ms after {before[:60]!r} before {after[:60]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
