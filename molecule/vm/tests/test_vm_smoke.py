"""Smoke checks of the VM test host itself (not of any role)."""

import socket

# The VM only: the scenario's Tang host (llm-vm-tang) has tests of its own.
testinfra_hosts = ["ansible://llm-vm"]


def test_ssh_port_forwarded_on_loopback(vm_instance):
    assert vm_instance["address"] == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", vm_instance["port"]), timeout=10) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")


def test_forwarded_ports_recorded(vm_instance):
    assert set(vm_instance["ports"]) == {"443", "8000"}


def test_root_on_vda_and_data_disk_by_id(host):
    assert host.mount_point("/").device == "/dev/vda"
    data = host.file("/dev/disk/by-id/virtio-llm-data")
    assert data.is_symlink
    assert data.linked_to == "/dev/vdb"


def test_prebaked_packages(host):
    for pkg in ("ufw", "cryptsetup", "python3-apt", "openssh-server"):
        assert host.package(pkg).is_installed, pkg
