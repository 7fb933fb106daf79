"""nvidia-smi's query CSV, /proc/driver/nvidia/version and dpkg's package list
are read right, including GPUs in a bad state and drivers that do not load."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "nvidia"
sys.path.insert(0, str(PROJECT / "roles" / "nvidia_driver" / "filter_plugins"))

import nvidia_driver as nd  # noqa: E402  (path set just above)


def sample(*parts):
    return DATA.joinpath(*parts).read_text()


def test_single_h100_gives_name_memory_and_bus_id():
    report = nd.nvidia_driver_smi(sample("smi", "single-h100.txt"))
    assert report == {
        "gpus": [{
            "index": 0, "name": "NVIDIA H100 PCIe", "memory_total_mib": 81559,
            "pci_bus_id": "00000000:17:00.0", "persistence_mode": True,
            "driver_version": "580.95.05", "problems": [], "healthy": True,
        }],
        "messages": [],
    }


def test_eight_gpu_board_lists_every_gpu_in_index_order():
    gpus = nd.nvidia_driver_smi(sample("smi", "8x-h100-sxm.txt"))["gpus"]
    assert [g["index"] for g in gpus] == list(range(8))
    assert {g["name"] for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert [g["memory_total_mib"] for g in gpus] == [81559] * 8
    assert all(g["healthy"] and g["persistence_mode"] for g in gpus)


def test_gpu_in_a_bad_state_is_flagged_and_the_lost_gpu_is_reported():
    report = nd.nvidia_driver_smi(sample("smi", "bad-state.txt"))
    by_index = {g["index"]: g for g in report["gpus"]}
    assert len(report["gpus"]) == 7  # the GPU at 9A:00.0 has no handle at all
    assert report["messages"] == ["Unable to determine the device handle for GPU0000:9A:00.0: Unknown Error"]
    assert by_index[3]["healthy"] is False
    assert by_index[3]["name"] is None and by_index[3]["memory_total_mib"] is None
    assert "memory_total_mib=[Unknown Error]" in by_index[3]["problems"]
    assert by_index[5]["healthy"] is False and by_index[5]["problems"] == ["memory_total_mib=ERR!"]
    assert by_index[4]["healthy"] is True and by_index[4]["persistence_mode"] is False
    assert [g["index"] for g in report["gpus"] if g["healthy"]] == [0, 1, 2, 4, 6]


def test_driver_that_does_not_load_gives_no_gpus_and_the_reason():
    report = nd.nvidia_driver_smi(sample("smi", "version-mismatch.txt"))
    assert report["gpus"] == []
    assert report["messages"][0] == "Failed to initialize NVML: Driver/library version mismatch"
    assert nd.nvidia_driver_smi(sample("smi", "no-devices.txt")) == {"gpus": [], "messages": ["No devices were found"]}


def test_empty_output_is_no_gpu():
    assert nd.nvidia_driver_smi("") == {"gpus": [], "messages": []}
    assert nd.nvidia_driver_smi(None) == {"gpus": [], "messages": []}


def test_loaded_module_version_is_read_for_open_and_proprietary_modules():
    assert nd.nvidia_driver_loaded_version(sample("proc", "open-580.txt")) == "580.95.05"
    assert nd.nvidia_driver_loaded_version(sample("proc", "proprietary-535.txt")) == "535.261.03"
    assert nd.nvidia_driver_loaded_version("") is None  # module not loaded: file absent


def test_installed_debian_driver_gives_branch_and_library_version():
    installed = nd.nvidia_driver_installed(sample("dpkg", "debian12-535-held.txt"))
    assert installed["branches"] == ["535"]
    assert installed["version"] == "535.261.03"
    # Removed packages (rc) and never-installed ones (un) do not count.
    assert "libnvidia-compute-470" not in installed["packages"]
    assert "nvidia-kernel-dkms" not in installed["packages"]
    assert installed["packages"]["libcuda1"] == "535.261.03-1"


def test_installed_ubuntu_server_driver_gives_its_branch():
    installed = nd.nvidia_driver_installed(sample("dpkg", "ubuntu24-570-server.txt"))
    assert installed["branches"] == ["570"]
    assert installed["version"] == "570.172.08"
    assert set(installed["packages"]) == {
        "libnvidia-compute-570-server", "nvidia-dkms-570-server-open", "nvidia-utils-570-server",
    }


def test_host_without_driver_has_no_branch():
    assert nd.nvidia_driver_installed(sample("dpkg", "no-driver.txt")) == {"packages": {}, "branches": [], "version": None}


def test_reboot_is_due_until_the_kernel_runs_the_installed_driver():
    assert nd.nvidia_driver_reboot_needed("580.95.05", None)  # first install: no module loaded
    assert nd.nvidia_driver_reboot_needed("580.95.05", "570.172.08")  # branch change
    assert nd.nvidia_driver_reboot_needed("580.95.05", "580.95.05", nouveau_loaded=True)
    assert nd.nvidia_driver_reboot_needed(None, None)  # check mode on a new host: nothing installed yet
    assert not nd.nvidia_driver_reboot_needed("580.95.05", "580.95.05")
    assert not nd.nvidia_driver_reboot_needed(None, None, nouveau_loaded=True, install=False)  # no GPU


def test_recorded_h100_output_parses_to_one_healthy_gpu():
    # Output recorded on a real H100 by scripts/gpu-facts-check.py.
    report = nd.nvidia_driver_smi(sample("smi", "h100-sxm-recorded.txt"))
    assert report["messages"] == []
    assert [(g["name"], g["memory_total_mib"], g["driver_version"], g["healthy"]) for g in report["gpus"]] == [
        ("NVIDIA H100 80GB HBM3", 81559, "580.159.04", True),
    ]
