"""Connection probes used by the scenarios' tests to look at a host from outside.

A port counts as reachable only when a service behind it answers: QEMU's user
network accepts a forwarded connection on the host side even when the guest's
firewall drops it, so a bare connect() proves nothing there.
"""

from __future__ import annotations

import socket

PROBE_REQUEST = b"HEAD / HTTP/1.0\r\n\r\n"

# Runs on a test host (python3 -c) to probe from that host's network position.
REMOTE_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(%r)
    print('open' if s.recv(1) else 'closed')
except socket.timeout:
    print('timeout')
except ConnectionRefusedError:
    print('refused')
except OSError as exc:
    print('error:' + exc.__class__.__name__)
""" % PROBE_REQUEST


def probe(address: str, port: int, timeout: float = 4.0) -> str:
    """Return 'open', 'closed', 'refused', 'timeout' or 'error:<name>'."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            sock.sendall(PROBE_REQUEST)
            return "open" if sock.recv(1) else "closed"
        except socket.timeout:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return f"error:{exc.__class__.__name__}"


def probe_from(host, address: str, port: int, timeout: float = 4.0) -> str:
    """Probe address:port from inside another test host (a testinfra host)."""
    result = host.run("python3 -c %s %s %s %s", REMOTE_PROBE, address, str(port), str(timeout))
    return result.stdout.strip()


def start_listener(host, port: int) -> str | None:
    """Start a throwaway HTTP listener on the host unless something already listens.

    Returns the transient unit's name so the caller can stop it, or None when a
    real service already holds the port.
    """
    if host.socket(f"tcp://0.0.0.0:{port}").is_listening or host.socket(f"tcp://:::{port}").is_listening:
        return None
    unit = f"netprobe-{port}"
    host.run("systemctl stop %s", unit)
    host.run_expect(
        [0],
        "systemd-run --unit=%s --property=Type=simple python3 -m http.server --bind :: %s",
        unit,
        str(port),
    )
    for _ in range(50):
        if host.socket(f"tcp://:::{port}").is_listening:
            return unit
        host.run("sleep 0.1")
    raise AssertionError(f"probe listener on port {port} did not start")
