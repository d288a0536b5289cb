"""sentrycam.protocol: what the trainer, the server and the dashboard say to each other.

Torch-free and web-free (numpy, json, pydantic and the standard library only), so every layer
imports it:

- :mod:`~sentrycam.protocol.messages`: the messages a trainer sends (one declaration each,
  in the terms of :mod:`~sentrycam.protocol.fields`);
- :mod:`~sentrycam.protocol.wire`: the ingest frame codec (a message in the container);
- :mod:`~sentrycam.protocol.validation`: the checks derived from the declarations (server
  side: frames and store batches), with :mod:`~sentrycam.protocol.array_rules` for the arrays;
- :mod:`~sentrycam.protocol.container`: the binary container both frame formats use;
- :mod:`~sentrycam.protocol.push`: the push frames the server sends to dashboards (one typed
  header per frame type);
- :mod:`~sentrycam.protocol.changes`: the kinds of change the server's feed announces;
- :mod:`~sentrycam.protocol.signals`: every per-step and per-layer signal, declared once;
- :mod:`~sentrycam.protocol.server_info`: how a running server is found from its database;
- :mod:`~sentrycam.protocol.redaction`: keeps tokens out of every log line.

The trainer side (capture) uses messages, wire, signals, server_info and redaction, none of
which imports pydantic.
"""
