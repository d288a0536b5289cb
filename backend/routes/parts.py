"""The server's parts, as typed FastAPI dependencies for the routes.

:func:`sentrycam.backend.app.create_app` keeps each part in ``app.state``; :func:`_part` is the
only reader of it. A route names what it uses in its signature (``store: StoreDep``), with the
part's type, so its uses are type-checked and what it depends on is visible.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from sentrycam.backend.activity import Activity
from sentrycam.backend.audit.engine import AuditEngine
from sentrycam.backend.audit.process import AuditProcess
from sentrycam.backend.audit.relay import AlertRelay
from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.hub import PushHub
from sentrycam.backend.ingest import IngestWriter
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store


def _part(name: str) -> Any:
    """A dependency on ``app.state.<name>`` (for requests and websockets alike). A coroutine
    function, so that FastAPI calls it on the event loop: it would run a plain function in its
    thread pool, a thread hop per part and request."""
    async def part(connection: HTTPConnection) -> Any:
        return getattr(connection.app.state, name)
    part.__name__ = part.__qualname__ = f"get_{name}"
    return Depends(part)


SettingsDep = Annotated[ServerSettings, _part("settings")]
StoreDep = Annotated[Store, _part("store")]
WriterDep = Annotated[IngestWriter, _part("writer")]
HubDep = Annotated[PushHub, _part("hub")]
FeedDep = Annotated[ChangeFeed, _part("feed")]
ActivityDep = Annotated[Activity, _part("activity")]
#: None where a setting turned the part off (``audit``, ``projector``).
AuditDep = Annotated[AuditProcess | AuditEngine | None, _part("audit")]
AlertRelayDep = Annotated[AlertRelay | None, _part("alert_relay")]
ProjectorDep = Annotated[ProjectionWorker | None, _part("projection")]
#: When the app was built, on :func:`time.monotonic`'s clock (seconds).
StartedDep = Annotated[float, _part("started_monotonic")]
