"""The free ports every running-process test and benchmark takes its listeners from."""

from __future__ import annotations

import socket

from benchmarks.harness import free_ports


def test_free_ports_are_distinct_and_bindable() -> None:
    """500 ports asked for at once are 500 different ports, each free to listen on: one at a time, the kernel handed
    a released port out again, and a proxy was once configured with its admin API on its own listener's port."""
    ports = free_ports(500)
    assert len(ports) == len(set(ports)) == 500
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
