"""DuckDB store: the only owner of the database file. See :class:`Store`."""
