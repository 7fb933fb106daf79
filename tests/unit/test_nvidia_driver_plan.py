"""Branch, kernel-module flavour, packages, pins and repository per OS and
source come from one function (the role's filter), tested here as the role runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "nvidia_driver" / "filter_plugins"))

import nvidia_driver as nd  # noqa: E402  (path set just above)


def gpu(device_id="0x2330", address="0000:18:00.0"):
    family = {"0x2330": "hopper", "0x1db4": "volta", "0x2901": "blackwell", "0x26b9": "ada"}[device_id]
    support = {"hopper": "supported", "ada": "supported", "volta": "unsupported", "blackwell": "required"}[family]
    return {"address": address, "device_id": device_id, "class": "0x030200",
            "architecture": family, "open_kernel_modules": support}


H100 = {"gpus": [gpu()], "nvswitches": []}
HGX = {"gpus": [gpu(address=f"0000:{n:02x}:00.0") for n in range(8)],
       "nvswitches": [{"address": "0000:05:00.0", "device_id": "0x22a3", "class": "0x068000"}]}
NO_GPU = {"gpus": [], "nvswitches": []}


def plan(pci=H100, distribution="Debian", version="12", source="debian", **kwargs):
    return nd.nvidia_driver_plan(pci, distribution, version, source, **kwargs)


def test_debian_12_from_non_free_gets_535_open_modules_and_gsp_firmware():
    result = plan()
    assert result["errors"] == []
    assert result["branch"] == "535" and result["open_kernel_modules"] is True
    assert result["packages"] == [
        "nvidia-open-kernel-dkms", "firmware-nvidia-gsp", "nvidia-smi", "libcuda1",
        "nvidia-persistenced", "linux-headers-amd64",
    ]
    assert result["repository"] == "debian-nonfree"
    assert result["pin_version"] == "535.*"
    # nvidia-persistenced has its own version numbers in Debian; headers follow the kernel.
    assert "nvidia-persistenced" not in result["pin_packages"]
    assert "nvidia-persistenced" in result["hold_packages"]
    assert not any(p.startswith("linux-headers") for p in result["pin_packages"] + result["hold_packages"])
    assert result["persistenced_user"] == "nvpd"


def test_debian_13_from_non_free_gets_550():
    assert plan(version="13")["branch"] == "550"


def test_debian_source_refuses_a_branch_debian_does_not_carry():
    errors = plan(branch="580")["errors"]
    assert errors and "only the 535 driver branch" in errors[0] and "nvidia_driver_source: nvidia" in errors[0]


@pytest.mark.parametrize(("version", "arch", "url"), [
    ("12", "x86_64", "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"),
    ("13", "aarch64", "https://developer.download.nvidia.com/compute/cuda/repos/debian13/sbsa/"),
])
def test_debian_from_nvidia_gets_580_unversioned_packages_and_the_cuda_repo(version, arch, url):
    result = plan(version=version, source="nvidia", architecture=arch)
    assert result["errors"] == []
    assert result["branch"] == "580"
    assert result["packages"][:4] == ["nvidia-kernel-open-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"]
    assert result["packages"][-1] == ("linux-headers-arm64" if arch == "aarch64" else "linux-headers-amd64")
    assert result["repository"] == "nvidia-cuda"
    assert result["cuda_repo_url"] == url
    assert result["cuda_repo_key_url"] == url + "3bf863cc.pub"
    assert "nvidia-persistenced" in result["pin_packages"]


@pytest.mark.parametrize("version", ["22", "24"])
def test_ubuntu_from_canonical_gets_the_580_server_packages_with_dkms(version):
    result = plan(distribution="Ubuntu", version=version, source="canonical")
    assert result["errors"] == []
    assert result["packages"] == [
        "nvidia-dkms-580-server-open", "nvidia-utils-580-server", "libnvidia-compute-580-server",
        "nvidia-compute-utils-580-server", "linux-headers-generic",
    ]
    assert result["repository"] is None  # restricted is part of every Ubuntu install
    assert result["persistenced_user"] == "nvidia-persistenced"


def test_ubuntu_canonical_proprietary_modules_drop_the_open_suffix():
    result = plan(distribution="Ubuntu", version="22", source="canonical", open_kernel_modules="false")
    assert result["packages"][0] == "nvidia-dkms-580-server"


@pytest.mark.parametrize(("branch", "kernel", "utils"), [
    ("580", "nvidia-dkms-580-open", "nvidia-utils-580"),
    ("590", "nvidia-dkms-open", "nvidia-utils"),  # NVIDIA dropped the branch from the names at 590
])
def test_ubuntu_from_nvidia_names_packages_as_the_branch_requires(branch, kernel, utils):
    result = plan(distribution="Ubuntu", version="24", source="nvidia", branch=branch)
    assert result["errors"] == []
    assert result["packages"][:2] == [kernel, utils]
    assert result["pin_version"] == f"{branch}.*"
    assert result["cuda_repo_url"].endswith("/ubuntu2404/x86_64/")


def test_internal_mirror_replaces_nvidias_urls():
    result = plan(distribution="Ubuntu", version="22", source="nvidia",
                  cuda_repo_url="https://mirror.example.internal/cuda/ubuntu2204",
                  cuda_repo_key_url="https://mirror.example.internal/keys/cuda.asc")
    assert result["cuda_repo_url"] == "https://mirror.example.internal/cuda/ubuntu2204/"
    assert result["cuda_repo_key_url"] == "https://mirror.example.internal/keys/cuda.asc"


@pytest.mark.parametrize(("distribution", "version", "source", "message"), [
    ("Debian", "12", "canonical", "not available on Debian"),
    ("Ubuntu", "24", "debian", "not available on Ubuntu"),
    ("Debian", "11", "debian", "Debian 11 is not supported"),
    ("Ubuntu", "20", "canonical", "Ubuntu 20 is not supported"),
])
def test_unsupported_os_or_source_is_refused_with_the_choices(distribution, version, source, message):
    errors = plan(distribution=distribution, version=version, source=source)["errors"]
    assert errors and message in errors[0]


def test_branch_must_be_a_number():
    assert "branch number" in plan(source="nvidia", branch="latest")["errors"][0]
    assert plan(source="nvidia", branch=570)["branch"] == "570"  # an int from YAML is fine


def test_volta_gets_the_proprietary_modules_on_auto():
    result = plan(pci={"gpus": [gpu("0x1db4")], "nvswitches": []}, source="nvidia")
    assert result["errors"] == []
    assert result["open_kernel_modules"] is False
    assert result["packages"][0] == "nvidia-kernel-dkms"


def test_open_modules_forced_on_volta_are_refused():
    errors = plan(pci={"gpus": [gpu("0x1db4")], "nvswitches": []}, open_kernel_modules=True)["errors"]
    assert errors and "do not support the volta GPUs" in errors[0]


def test_proprietary_modules_forced_on_blackwell_are_refused():
    errors = plan(pci={"gpus": [gpu("0x2901")], "nvswitches": []}, source="nvidia", open_kernel_modules="false")["errors"]
    assert errors and "blackwell GPUs work only with the open kernel modules" in errors[0]


def test_blackwell_needs_a_branch_debian_12_does_not_have():
    errors = plan(pci={"gpus": [gpu("0x2901")], "nvswitches": []})["errors"]
    assert any("needs driver branch 570 or newer" in e and "nvidia_driver_source: nvidia" in e for e in errors)


def test_volta_is_refused_on_branches_that_dropped_it():
    errors = plan(pci={"gpus": [gpu("0x1db4")], "nvswitches": []}, source="nvidia", branch="590")["errors"]
    assert any("not supported after branch 580" in e for e in errors)


def test_volta_and_blackwell_in_one_host_cannot_share_a_driver():
    pci = {"gpus": [gpu("0x1db4"), gpu("0x2901", "0000:3b:00.0")], "nvswitches": []}
    errors = plan(pci=pci, source="nvidia")["errors"]
    assert any("no single NVIDIA driver runs both" in e for e in errors)


def test_host_without_gpu_still_gets_a_complete_plan_with_open_modules():
    result = plan(pci=NO_GPU)
    assert result["errors"] == [] and result["open_kernel_modules"] is True
    assert result["fabricmanager_packages"] == []


@pytest.mark.parametrize(("distribution", "version", "source", "fabric"), [
    ("Ubuntu", "24", "canonical", ["nvidia-fabricmanager-580", "libnvidia-nscq-580"]),
    ("Ubuntu", "22", "nvidia", ["nvidia-fabricmanager-580", "libnvidia-nscq-580"]),
    ("Debian", "12", "nvidia", ["nvidia-fabricmanager", "libnvidia-nscq"]),
])
def test_nvswitch_brings_the_fabric_manager_pinned_and_held(distribution, version, source, fabric):
    result = plan(pci=HGX, distribution=distribution, version=version, source=source)
    assert result["errors"] == []
    assert result["fabricmanager_packages"] == fabric
    assert set(fabric) <= set(result["pin_packages"]) and set(fabric) <= set(result["hold_packages"])


def test_nvswitch_on_debians_own_packages_asks_for_nvidias_repository():
    errors = plan(pci=HGX)["errors"]
    assert errors and "Debian does not package" in errors[0] and "nvidia_driver_source: nvidia" in errors[0]


def test_fabric_manager_can_be_turned_off_or_forced():
    assert plan(pci=HGX, source="nvidia", fabricmanager=False)["fabricmanager_packages"] == []
    assert plan(pci=H100, source="nvidia", fabricmanager="true")["fabricmanager_packages"] != []


def test_package_override_and_extras_are_installed_and_held():
    result = plan(packages=["nvidia-tesla-535-kernel-dkms", "nvidia-tesla-535-smi", "linux-headers-amd64"],
                  extra_packages=["nvidia-modprobe"])
    assert result["packages"] == ["nvidia-tesla-535-kernel-dkms", "nvidia-tesla-535-smi", "linux-headers-amd64",
                                  "nvidia-modprobe"]
    assert result["pin_packages"] == ["nvidia-tesla-535-kernel-dkms", "nvidia-tesla-535-smi"]
    assert "nvidia-modprobe" in result["hold_packages"] and "nvidia-modprobe" not in result["pin_packages"]


@pytest.mark.parametrize("source_os", [
    ("Debian", "12", "debian"), ("Debian", "13", "debian"), ("Debian", "12", "nvidia"), ("Debian", "13", "nvidia"),
    ("Ubuntu", "22", "canonical"), ("Ubuntu", "24", "canonical"), ("Ubuntu", "22", "nvidia"), ("Ubuntu", "24", "nvidia"),
])
def test_every_pinned_package_is_also_installed_and_held(source_os):
    distribution, version, source = source_os
    result = plan(distribution=distribution, version=version, source=source)
    assert result["errors"] == []
    assert set(result["pin_packages"]) <= set(result["packages"]) & set(result["hold_packages"])
