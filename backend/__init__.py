"""Server side of sentrycam: store, ingest, REST API, CLI. Import submodules explicitly."""
