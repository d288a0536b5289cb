"""sentrycam.projector (built in a later issue)."""
