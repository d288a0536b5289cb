"""Which run the user means by ``--run``: the one place every subcommand resolves it.

A run is named by its full id, by a prefix of the id that no other run shares (the dashboard
shows the first characters), or by its name (``demo-cnn-seed0``). An ambiguous or unknown name
is a :class:`~sentrycam.backend.cli_errors.CLIError` that lists the candidates.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sentrycam.backend.cli_errors import CLIError

#: How many candidate runs an error message lists.
LISTED = 10


def resolve_run(wanted: str, runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The summary in ``runs`` (dicts with ``run_id``, ``name``, ...) that ``wanted`` names."""
    exact = [run for run in runs if run["run_id"] == wanted]
    if exact:
        return exact[0]
    matches = [run for run in runs
               if run["run_id"].startswith(wanted) or run.get("name") == wanted]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = "; runs: " + _listing(runs) if runs else "; there are no runs yet"
        raise CLIError(f"no run matches {wanted!r} (give a run id, a unique prefix of one, or "
                       f"a run name){known}")
    raise CLIError(f"{wanted!r} matches {len(matches)} runs: {_listing(matches)}; give more "
                   "characters of the run id")


def _listing(runs: Sequence[Mapping[str, Any]]) -> str:
    shown = [f"{run['run_id'][:12]} ({run.get('name') or 'no name'}, "
             f"{run.get('status') or '?'}, created {run.get('created_at') or '?'})"
             for run in runs[:LISTED]]
    more = f" and {len(runs) - LISTED} more" if len(runs) > LISTED else ""
    return ", ".join(shown) + more
