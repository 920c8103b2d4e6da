"""Reading the logs of the processes under test."""

from __future__ import annotations

import itertools
import re

LOG_ENTRY = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ", re.MULTILINE)


def unexpected_tracebacks(log: str) -> list[str]:
    starts = [match.start() for match in LOG_ENTRY.finditer(log)] + [len(log)]
    entries = [log[begin:end] for begin, end in itertools.pairwise(starts)]
    # aiohttp's own "Error handling request" traces for unparsable HTTP (with the raw bytes) are scrubbed
    # by shared.logging, so no traceback at all may appear, even at DEBUG.
    return [entry for entry in entries if "Traceback" in entry]
