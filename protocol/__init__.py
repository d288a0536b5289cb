"""sentrycam.protocol: what the trainer, the server and the dashboard say to each other.

Torch-free and web-free (numpy, json and pydantic only), so every layer imports it:

- :mod:`~sentrycam.protocol.messages`: the messages a trainer sends (one declaration each);
- :mod:`~sentrycam.protocol.container`: the binary container both frame formats use;
- :mod:`~sentrycam.protocol.changes`: the kinds of change the server's feed announces;
- :mod:`~sentrycam.protocol.push`: the push frames the server sends to dashboards (one typed
  header per frame type).
"""
