"""The free-port check of `make up`: a port whose old connections sit in TIME-WAIT is free."""

from __future__ import annotations

import socket

from mailwarden_servers.ports import free_port, port_is_free, port_or_free


def _leave_time_wait(port: int) -> None:
    """Serve one connection on ``port`` and close it server side first, as a stopped service does."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the side that closes first keeps the connection in TIME-WAIT
        client.recv(1)
        client.close()


def _plain_bind_fails(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_a_port_in_time_wait_counts_as_free_and_keeps_its_number() -> None:
    port = free_port()
    _leave_time_wait(port)
    assert _plain_bind_fails(port), "the connection should be in TIME-WAIT (the old check's failure)"
    assert port_is_free(port)
    assert port_or_free(port) == port


def test_a_listening_port_is_taken() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        other = port_or_free(port)
        assert other != port and port_is_free(other)


def test_free_ports_handed_out_in_a_row_are_distinct() -> None:
    """A server takes two or more ports before it listens on any: the answers must differ (the OS
    alone handed nats-server the same client and monitor port in a full run)."""
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
