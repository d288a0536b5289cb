"""DuckDB store: the only owner of the database file. See :class:`Store`.

Modules: ``core`` (the Store), ``schema`` (tables, version, migrations), ``writer``
(messages -> rows), ``reader`` (queries), ``derived`` (embeddings, quality, alerts),
``export`` (Parquet), ``errors``, ``failure`` (storage failures), ``retention`` (which
snapshots keep their feature vectors), ``sizes`` (bytes per run and snapshot),
``compact`` (apply retention to a file and shrink it).
"""

from sentrycam.backend.store.core import Store
from sentrycam.backend.store.errors import (MissingSnapshotError, StoreClosedError,
                                            StoreFormatError, StoreLockedError,
                                            StoreReadOnlyError, StoreUnavailableError,
                                            StoreVersionError, UnknownAlertError,
                                            UnknownRunError)
from sentrycam.backend.store.failure import StorageFailure
from sentrycam.backend.store.schema import SCHEMA_VERSION
from sentrycam.backend.store.retention import RetentionSettings
from sentrycam.backend.store.writer import Refusal

__all__ = [
    "Store", "UnknownRunError", "RetentionSettings", "MissingSnapshotError", "StoreClosedError",
    "StoreLockedError", "StoreReadOnlyError", "StoreVersionError", "SCHEMA_VERSION",
    "UnknownAlertError", "Refusal", "StoreFormatError", "StoreUnavailableError",
    "StorageFailure",
]
