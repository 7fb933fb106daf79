"""The outside-view probe used by the scenario tests tells open, refused and
silently dropped ports apart (so a firewall test can fail for the right reason)."""

from __future__ import annotations

import socket
import threading

import netprobe


def _listener(reply: bytes | None):
    release = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        conn, _ = server.accept()
        if reply is not None:
            conn.recv(64)
            conn.sendall(reply)
        else:
            conn.recv(64)  # accept, then stay silent like a black hole
            release.wait(5)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, release


def test_answering_service_is_open():
    server, _ = _listener(b"HTTP/1.0 200 OK\r\n\r\n")
    assert netprobe.probe("127.0.0.1", server.getsockname()[1]) == "open"
    server.close()


def test_closed_port_is_refused():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert netprobe.probe("127.0.0.1", port) == "refused"


def test_silent_peer_is_a_timeout_not_open():
    server, release = _listener(None)
    assert netprobe.probe("127.0.0.1", server.getsockname()[1], timeout=0.5) == "timeout"
    release.set()
    server.close()
