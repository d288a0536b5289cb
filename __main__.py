"""``python -m sentrycam`` runs the command-line interface."""

from sentrycam.backend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
