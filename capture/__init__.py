"""Capture agent: attach to a PyTorch model and stream what it sees. See :func:`attach`.

Import-light: this package loads torch and numpy, nothing of the web stack; the websocket
transport and the local server launcher are imported inside :func:`attach` when it needs them.
(The import below is eager on purpose: the function ``attach`` shares its name with its module,
and binding it here, first, keeps ``capture.attach`` the function however the package is used.)
"""

from sentrycam.capture.attach import Run, attach

__all__ = ["Run", "attach"]
