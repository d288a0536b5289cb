"""sentrycam.frontend (built in a later issue)."""
