"""Progress of a long evaluation: pairs done, pairs/s and ETA.

A tqdm bar on a terminal; periodic log lines otherwise (a log file or a CI job wants
whole lines, not a redrawn bar); nothing in quiet mode.  A resumed run says how much was
already done.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from ..errors import UsageError


class _Bar(tqdm):
    monitor_interval = 0       # no monitor thread


def _duration(seconds: float) -> str:
    return tqdm.format_interval(max(0, int(round(seconds))))


class Progress:
    """``progress(done, total)`` as pairs finish: a bar on a terminal, log lines otherwise.

    ``mode``: "bar", "log", "quiet" or "auto" (bar on a terminal, else log).  Log mode
    writes a line every ``interval`` seconds (default 10) and a closing line, and stays
    silent for a job that finishes within the first interval.  ``keep``: leave the bar's
    final state on screen (else it is erased when done).  ``close()`` ends an unfinished
    bar's line (after an interruption, say).
    """

    def __init__(self, label: str = "pairs", stream=None, mode: str = "auto",
                 interval: float | None = None, keep: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", lambda: False)
            try:
                mode = "bar" if isatty() else "log"
            except ValueError:      # a closed stream
                mode = "quiet"
        if mode not in ("bar", "log", "quiet"):
            raise UsageError(f"progress mode must be auto, bar, log or quiet, not {mode!r}")
        self.mode = mode
        self.label = label
        self.keep = keep
        self.interval = interval if interval is not None else (0.2 if mode == "bar" else 10.0)
        self.start: float | None = None
        self.first_done = 0
        self.last_shown = 0.0
        self.shown = False
        self.finished = False
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.mode == "quiet" or self.finished:
            return
        now = time.monotonic()
        if self.start is None:
            self.start, self.first_done, self.last_shown = now, done, now
            if done >= total and total:
                self.finished = True
                if self.mode == "log" or self.keep:
                    self._line(f"{self.label}: all {total:,} pairs already done")
                return
            if done:
                self._line(f"{self.label}: resuming: {done:,} of {total:,} pairs already done")
            if self.mode == "bar":
                self.bar = _Bar(total=total, initial=done, desc=self.label, unit=" pairs",
                                file=self.stream, leave=self.keep, mininterval=self.interval,
                                dynamic_ncols=True, smoothing=0.1,
                                bar_format="{desc}: {percentage:5.1f}% |{bar}| "
                                           "{n_fmt}/{total_fmt} pairs  {rate_fmt}  "
                                           "ETA {remaining}")
            return
        if self.mode == "bar":
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.finished = True
                self.bar.bar_format = ("{desc}: {n_fmt}/{total_fmt} pairs (100%) in {elapsed}, "
                                       "{rate_fmt}")
                self.close()
            return
        if done >= total:
            self.finished = True
            if self.shown or now - self.start >= self.interval:
                self._line(self._text(done, total, now))
            return
        if now - self.last_shown >= self.interval:
            self.last_shown = now
            self._line(self._text(done, total, now))

    def close(self) -> None:
        """End the bar (its line stays when ``keep``); idempotent."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _text(self, done: int, total: int, now: float) -> str:
        elapsed = now - self.start
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        if done >= total:
            return (f"{self.label}: {done:,}/{total:,} pairs (100%) in {_duration(elapsed)}"
                    + (f", {rate:,.0f} pairs/s" if rate > 0 else ""))
        pct = 100.0 * done / total if total else 100.0
        eta = _duration((total - done) / rate) if rate > 0 else "?"
        return (f"{self.label}: {done:,}/{total:,} pairs ({pct:.1f}%), {rate:,.0f} pairs/s, "
                f"ETA {eta}")

    def _line(self, text: str) -> None:
        self.shown = True
        self.stream.write(text + "\n")
        self.stream.flush()
