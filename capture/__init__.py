"""Capture agent: attach to a PyTorch model and stream what it sees. See :func:`attach`.

Import-light: importing the package loads nothing; ``capture.attach`` and ``capture.Run``
load torch on first use (module ``__getattr__``), so a tool that only needs a submodule (the
spool replay of ``sentrycam sync``) never pays for torch. The function lives in
:mod:`~sentrycam.capture.attaching`: a module named ``attach`` would shadow it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "attach"]


def __getattr__(name: str) -> Any:
    if name == "attach":
        from sentrycam.capture.attaching import attach as value
    elif name == "Run":
        from sentrycam.capture.run import Run as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value
