"""Thick mode: a warm daemon on each node and the lean shims that hand it their calls.

- ``wire``: the one-request, one-reply protocol (stdlib C modules only);
- ``shim``: the plugin process's side (connect, send, or say why not);
- ``daemon``: ``multihome daemon``, serving requests from a warm process;
- ``probe``: ``multihome probe``, a real call to the daemon (DaemonSet probes).

Nothing is imported here: a shim loads only ``wire`` and ``shim``.
"""
