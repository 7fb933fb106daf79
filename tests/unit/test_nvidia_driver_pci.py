"""GPUs and NVSwitches are found from sysfs alone (vendor 0x10de, class
0x0300/0x0302 for GPUs, 0x0680 for NVSwitches), before any driver exists, and
the GPU generation decides what the open kernel modules mean for it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "nvidia"
LIBRARY = PROJECT / "roles" / "nvidia_driver" / "library"
sys.path.insert(0, str(LIBRARY))

import nvidia_driver_pci as pci  # noqa: E402  (path set just above)


def fake_sysfs(tmp_path: Path, sample: str) -> Path:
    """A /sys/bus/pci/devices look-alike built from a sample listing."""
    root = tmp_path / "devices"
    root.mkdir()
    for line in (DATA / "pci" / sample).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        address, vendor, device, pci_class = line.split()
        node = root / address
        node.mkdir()
        (node / "vendor").write_text(vendor + "\n")
        (node / "device").write_text(device + "\n")
        (node / "class").write_text(pci_class + "\n")
    return root


def scan(tmp_path, sample):
    return pci.classify(pci.read_sysfs(str(fake_sysfs(tmp_path, sample))))


def test_single_h100_is_found_and_the_bmc_vga_is_not(tmp_path):
    found = scan(tmp_path, "single-h100-pcie.txt")
    assert found["gpus"] == [{
        "address": "0000:17:00.0", "device_id": "0x2331", "class": "0x030200",
        "architecture": "hopper", "open_kernel_modules": "supported",
    }]
    assert found["nvswitches"] == []


def test_hgx_board_shows_eight_gpus_and_four_nvswitches_in_bus_order(tmp_path):
    found = scan(tmp_path, "hgx-8x-h100-sxm.txt")
    assert [g["address"] for g in found["gpus"]] == [
        "0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
        "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0",
    ]
    assert {g["architecture"] for g in found["gpus"]} == {"hopper"}
    assert [s["device_id"] for s in found["nvswitches"]] == ["0x22a3"] * 4


def test_hdmi_audio_function_of_a_gpu_is_not_counted(tmp_path):
    found = scan(tmp_path, "workstation-rtx-4090.txt")
    assert [g["device_id"] for g in found["gpus"]] == ["0x2684"]
    assert found["gpus"][0]["architecture"] == "ada"


def test_host_without_nvidia_devices_has_no_gpus(tmp_path):
    assert scan(tmp_path, "no-nvidia.txt") == {"gpus": [], "nvswitches": []}


def test_missing_sysfs_is_no_gpu_rather_than_a_crash(tmp_path):
    assert pci.read_sysfs(str(tmp_path / "absent")) == []


def test_device_that_hides_its_attributes_is_skipped(tmp_path):
    root = fake_sysfs(tmp_path, "single-h100-pcie.txt")
    (root / "0000:ff:00.0").mkdir()  # no vendor/device/class files
    assert len(pci.classify(pci.read_sysfs(str(root)))["gpus"]) == 1


@pytest.mark.parametrize(
    ("device_id", "family", "open_modules"),
    [
        ("0x13bb", "maxwell", "unsupported"),  # GM107 (Quadro M1200 class)
        ("0x15f8", "pascal", "unsupported"),  # Tesla P100 PCIe
        ("0x1b38", "pascal", "unsupported"),  # Tesla P40
        ("0x1db4", "volta", "unsupported"),  # Tesla V100 PCIe
        ("0x1eb8", "turing", "supported"),  # Tesla T4
        ("0x2182", "turing", "supported"),  # GTX 1660 Ti (TU116)
        ("0x20b0", "ampere", "supported"),  # A100 SXM4
        ("0x2236", "ampere", "supported"),  # A10
        ("0x2330", "hopper", "supported"),  # H100 SXM5
        ("0x2335", "hopper", "supported"),  # H200
        ("0x26b9", "ada", "supported"),  # L40S
        ("0x27b8", "ada", "supported"),  # L4
        ("0x2901", "blackwell", "required"),  # B200
        ("0x2bb5", "blackwell", "required"),  # RTX PRO 6000 Blackwell
        ("0x3182", "unknown", "supported"),  # newer than the table
        ("0x1023", "legacy", "unsupported"),  # Kepler K40
    ],
)
def test_generation_from_device_id_decides_open_module_support(tmp_path, device_id, family, open_modules):
    found = pci.classify([{"address": "0000:01:00.0", "vendor": "0x10de", "device": device_id, "class": "0x030200"}])
    assert found["gpus"][0]["architecture"] == family
    assert found["gpus"][0]["open_kernel_modules"] == open_modules


def test_module_reports_the_gpus_without_changing_anything_in_check_mode(tmp_path):
    root = fake_sysfs(tmp_path, "hgx-8x-h100-sxm.txt")
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"root": str(root), "_ansible_check_mode": True}}))
    result = subprocess.run(
        [sys.executable, str(LIBRARY / "nvidia_driver_pci.py"), str(args)],
        capture_output=True, text=True, check=True,
    )
    output = json.loads(result.stdout)
    assert output["changed"] is False
    assert len(output["gpus"]) == 8 and len(output["nvswitches"]) == 4


def test_recorded_h100_vm_shows_one_hopper_gpu_among_virtio_devices(tmp_path):
    # Sample read off a real H100 host by scripts/gpu-facts-check.py.
    found = scan(tmp_path, "h100-sxm-vm-recorded.txt")
    assert [(g["address"], g["device_id"], g["architecture"]) for g in found["gpus"]] == [
        ("0000:00:06.0", "0x2330", "hopper"),
    ]
    assert found["nvswitches"] == []
