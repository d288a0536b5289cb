"""Capture agent: attach to a PyTorch model and stream what it sees. See :func:`attach`."""
