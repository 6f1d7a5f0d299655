"""Tables that tests hand to the end-of-run summary (conftest.pytest_terminal_summary)."""
from __future__ import annotations

#: section title -> lines, printed after the test results
SECTIONS: dict[str, list[str]] = {}
