"""A task function that dies as a crash in native code would: worker processes' tests import it by name."""

from __future__ import annotations

import faulthandler
from typing import Any


def segfault(_item: Any) -> None:
    """Raises SIGSEGV in this process (the caller sees a worker that ended with exit code -11)."""
    faulthandler._sigsegv()
