"""Decisions and parsing for the nvidia_driver role, in one place that unit
tests import directly (tests/unit/test_nvidia_driver_*.py).

- nvidia_driver_plan: which branch, kernel-module flavour, packages, pins and
  repository a host gets, from its OS, the chosen source and the GPUs found
  on the PCI bus; problems come back as sentences in plan.errors.
- nvidia_driver_smi: parse `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`.
- nvidia_driver_installed: NVIDIA driver packages dpkg has installed, and
  their branch(es), from `dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'`.
- nvidia_driver_loaded_version: the running kernel module's version from
  /proc/driver/nvidia/version.
- nvidia_driver_reboot_needed: whether the kernel must be restarted to run
  the installed driver.
"""

from __future__ import annotations

import re

# Branch each source installs when nvidia_driver_branch is empty. Debian
# carries one branch per release (non-free): 535 in bookworm, 550 in trixie.
# 580 is NVIDIA's current long-term production branch, published by NVIDIA
# and, as "-server" packages, by Canonical for 22.04 and 24.04.
DEBIAN_BRANCHES = {"12": "535", "13": "550"}
DEFAULT_BRANCH = "580"

SUPPORTED = {("Debian", "12"), ("Debian", "13"), ("Ubuntu", "22"), ("Ubuntu", "24")}
SOURCES = {"Debian": ("debian", "nvidia"), "Ubuntu": ("canonical", "nvidia")}

CUDA_REPO_BASE = "https://developer.download.nvidia.com/compute/cuda/repos"
CUDA_REPO_KEY = "3bf863cc.pub"  # NVIDIA's current CUDA repository signing key
CUDA_ARCH = {"x86_64": "x86_64", "aarch64": "sbsa"}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

# Branch limits per GPU family: Blackwell needs 570 or newer; 590 dropped
# Maxwell, Pascal and Volta.
MIN_BRANCH = {"blackwell": 570}
MAX_BRANCH = {"maxwell": 580, "pascal": 580, "volta": 580}

# Packages whose installed version says which branch is on the host.
MARKER = re.compile(
    r"^(libcuda1|nvidia-smi|nvidia-(open-)?kernel-dkms|nvidia-kernel-open-dkms"
    r"|libnvidia-compute(-\d+(-server)?)?|nvidia-utils(-\d+(-server)?)?"
    r"|nvidia-dkms(-\d+)?(-server)?(-open)?)$"
)
# Packages whose version says which driver the user-space libraries are.
LIBRARY = re.compile(r"^(libcuda1|libnvidia-compute(-\d+(-server)?)?)$")

UNAVAILABLE = ("[N/A]", "[Unknown Error]", "ERR!", "[GPU is lost]", "[Not Supported]", "[Insufficient Permissions]")
SMI_FIELDS = ("index", "name", "memory_total_mib", "pci_bus_id", "persistence_mode", "driver_version")


def _as_setting(value):
    """auto / True / False from a bool or a string such as 'true' or 'auto'."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    return text


def _resolve_open(setting, gpus, errors):
    """Open or proprietary kernel modules, with the reason; errors appended."""
    needs = {g["open_kernel_modules"] for g in gpus}
    required = sorted({g["architecture"] for g in gpus if g["open_kernel_modules"] == "required"})
    unsupported = sorted({g["architecture"] for g in gpus if g["open_kernel_modules"] == "unsupported"})
    if setting == "auto":
        if required and unsupported:
            errors.append(
                f"This host mixes GPUs that need the open kernel modules ({', '.join(required)}) "
                f"with GPUs the open modules do not support ({', '.join(unsupported)}); "
                "no single NVIDIA driver runs both. Move one kind of GPU to another host."
            )
            return False, "conflict"
        if "unsupported" in needs:
            return False, f"auto: {', '.join(unsupported)} GPUs need the proprietary modules"
        if gpus:
            return True, "auto: every GPU is Turing or newer; NVIDIA recommends the open modules"
        return True, "auto: no GPU found; the open modules are NVIDIA's default since 560"
    if setting is True and unsupported:
        errors.append(
            f"nvidia_driver_open_kernel_modules is true, but the open kernel modules do not support "
            f"the {', '.join(unsupported)} GPUs on this host. Set it to auto or false."
        )
    if setting is False and required:
        errors.append(
            f"nvidia_driver_open_kernel_modules is false, but {', '.join(required)} GPUs work only with "
            "the open kernel modules. Set it to auto or true."
        )
    if setting not in (True, False):
        errors.append(f"nvidia_driver_open_kernel_modules must be auto, true or false, not {setting!r}.")
        return True, "invalid"
    return setting, "set by nvidia_driver_open_kernel_modules"


def _packages(distribution, source, branch, open_modules, arch):
    """(driver packages, packages to pin to the branch, fabric manager packages, persistenced user)."""
    headers_arch = DEBIAN_ARCH.get(arch, "amd64")
    numeric = int(branch)
    if distribution == "Debian":
        headers = [f"linux-headers-{headers_arch}"]
        if source == "debian":
            kernel = "nvidia-open-kernel-dkms" if open_modules else "nvidia-kernel-dkms"
            driver = [kernel, "firmware-nvidia-gsp", "nvidia-smi", "libcuda1"]
            # Debian builds nvidia-persistenced from its own source package,
            # with its own version numbers: held, but not pinned to the branch.
            return driver + ["nvidia-persistenced"] + headers, driver, [], "nvpd"
        kernel = "nvidia-kernel-open-dkms" if open_modules else "nvidia-kernel-dkms"
        driver = [kernel, "nvidia-smi", "libcuda1", "nvidia-persistenced"]
        fabric = ["nvidia-fabricmanager", "libnvidia-nscq"] if numeric >= 580 else [
            f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"]
        return driver + headers, driver, fabric, "nvpd"
    headers = ["linux-headers-generic"]
    flavour = "-open" if open_modules else ""
    if source == "canonical":
        driver = [
            f"nvidia-dkms-{branch}-server{flavour}",
            f"nvidia-utils-{branch}-server",
            f"libnvidia-compute-{branch}-server",
            f"nvidia-compute-utils-{branch}-server",
        ]
        fabric = [f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"]
        return driver + headers, driver, fabric, "nvidia-persistenced"
    if numeric >= 590:  # NVIDIA dropped the branch from Ubuntu package names at 590
        driver = [f"nvidia-dkms{flavour}", "nvidia-utils", "libnvidia-compute", "nvidia-compute-utils"]
        fabric = ["nvidia-fabricmanager", "libnvidia-nscq"]
    else:
        driver = [f"nvidia-dkms-{branch}{flavour}", f"nvidia-utils-{branch}",
                  f"libnvidia-compute-{branch}", f"nvidia-compute-utils-{branch}"]
        fabric = [f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"]
    return driver + headers, driver, fabric, "nvidia-persistenced"


def nvidia_driver_plan(
    pci,
    distribution,
    major_version,
    source,
    branch="",
    open_kernel_modules="auto",
    architecture="x86_64",
    fabricmanager="auto",
    cuda_repo_url="",
    cuda_repo_key_url="",
    packages=None,
    extra_packages=None,
):
    """Everything the role installs and pins on one host, decided in one place."""
    errors = []
    major_version = str(major_version)
    gpus = list((pci or {}).get("gpus", []))
    nvswitches = list((pci or {}).get("nvswitches", []))

    if (distribution, major_version) not in SUPPORTED:
        errors.append(
            f"{distribution} {major_version} is not supported by the nvidia_driver role; "
            "supported are Debian 12/13 and Ubuntu 22.04/24.04."
        )
        return {"errors": errors}
    if source not in SOURCES[distribution]:
        errors.append(
            f"nvidia_driver_source {source!r} is not available on {distribution}; "
            f"choose one of {', '.join(SOURCES[distribution])}."
        )
        return {"errors": errors}

    distro_branch = DEBIAN_BRANCHES[major_version] if source == "debian" else DEFAULT_BRANCH
    branch = str(branch or distro_branch).strip()
    if not branch.isdigit():
        errors.append(f"nvidia_driver_branch must be a driver branch number such as 580, not {branch!r}.")
        return {"errors": errors}
    if source == "debian" and branch != distro_branch:
        errors.append(
            f"Debian {major_version} provides only the {distro_branch} driver branch (non-free); "
            f"for branch {branch} set nvidia_driver_source: nvidia."
        )
    for gpu in gpus:
        family = gpu["architecture"]
        if family in MIN_BRANCH and int(branch) < MIN_BRANCH[family]:
            errors.append(
                f"The {family} GPU at {gpu['address']} needs driver branch {MIN_BRANCH[family]} or newer; "
                f"this host would get {branch}"
                + (" (Debian's own branch: set nvidia_driver_source: nvidia)." if source == "debian" else ".")
            )
        if family in MAX_BRANCH and int(branch) > MAX_BRANCH[family]:
            errors.append(
                f"The {family} GPU at {gpu['address']} is not supported after branch {MAX_BRANCH[family]}; "
                f"set nvidia_driver_branch to {MAX_BRANCH[family]} or older."
            )

    open_modules, open_reason = _resolve_open(_as_setting(open_kernel_modules), gpus, errors)
    driver, pinned, fabric, persistenced_user = _packages(distribution, source, branch, open_modules, architecture)
    if packages:
        driver, pinned = list(packages), [p for p in packages if not p.startswith("linux-headers-")]

    fabric_setting = _as_setting(fabricmanager)
    want_fabric = bool(nvswitches) if fabric_setting == "auto" else fabric_setting is True
    if want_fabric and not fabric:
        errors.append(
            "This host has NVSwitches and needs nvidia-fabricmanager, which Debian does not package; "
            "set nvidia_driver_source: nvidia to install it from NVIDIA's repository."
        )
    fabric = fabric if want_fabric else []

    repo_dist = f"{distribution.lower()}{major_version}{'04' if distribution == 'Ubuntu' else ''}"
    repo_url = cuda_repo_url or f"{CUDA_REPO_BASE}/{repo_dist}/{CUDA_ARCH.get(architecture, 'x86_64')}/"
    repo_url = repo_url.rstrip("/") + "/"
    extra = list(extra_packages or [])
    hold = [p for p in driver if not p.startswith("linux-headers-")] + fabric + extra
    return {
        "errors": errors,
        "branch": branch,
        "source": source,
        "open_kernel_modules": open_modules,
        "open_kernel_modules_reason": open_reason,
        "packages": driver + extra,
        "pin_packages": pinned + fabric,
        "pin_version": f"{branch}.*",
        "hold_packages": hold,
        "fabricmanager_packages": fabric,
        "persistenced_user": persistenced_user,
        "repository": "nvidia-cuda" if source == "nvidia" else ("debian-nonfree" if source == "debian" else None),
        "cuda_repo_url": repo_url,
        "cuda_repo_key_url": cuda_repo_key_url or repo_url + CUDA_REPO_KEY,
    }


def _value(text):
    text = text.strip()
    return None if text in UNAVAILABLE or text.startswith("[") else text


def nvidia_driver_smi(stdout):
    """Parse nvidia-smi's query CSV into {gpus, messages}; a GPU with an unreadable
    field is listed with healthy: false; lines that are not CSV rows (e.g.
    'Unable to determine the device handle for GPU...') come back in messages."""
    gpus, messages = [], []
    for line in (stdout or "").splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(SMI_FIELDS) or not fields[0].isdigit():
            messages.append(line.strip())
            continue
        raw = dict(zip(SMI_FIELDS, fields))
        values = {key: _value(val) for key, val in raw.items()}
        memory = values["memory_total_mib"]
        gpu = {
            "index": int(raw["index"]),
            "name": values["name"],
            "memory_total_mib": int(memory) if memory and memory.isdigit() else None,
            "pci_bus_id": values["pci_bus_id"],
            "persistence_mode": values["persistence_mode"] == "Enabled",
            "driver_version": values["driver_version"],
        }
        gpu["problems"] = [f"{key}={raw[key]}" for key in SMI_FIELDS if values[key] is None]
        gpu["healthy"] = not gpu["problems"] and gpu["memory_total_mib"] is not None
        gpus.append(gpu)
    return {"gpus": gpus, "messages": messages}


def _upstream(version):
    """'1:580.95.05-0ubuntu1' -> '580.95.05'."""
    return re.sub(r"^\d+:", "", version).split("-", 1)[0]


def nvidia_driver_installed(stdout):
    """Installed NVIDIA driver packages: {packages: {name: version}, branches: [...],
    version: upstream version of the CUDA library or None}."""
    packages = {}
    for line in (stdout or "").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or len(parts[2]) < 2 or parts[2][1] not in "iHUFWt":
            continue  # not installed (only config files, or never installed)
        name, version = parts[0].split(":")[0], parts[1]
        if MARKER.match(name) and version:
            packages[name] = version
    branches = sorted({_upstream(v).split(".")[0] for v in packages.values()})
    library = sorted(v for n, v in packages.items() if LIBRARY.match(n))
    return {
        "packages": packages,
        "branches": branches,
        "version": _upstream(library[-1]) if library else None,
    }


def nvidia_driver_loaded_version(text):
    """'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build ...' -> '580.95.05'."""
    match = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s", text or "")
    return match.group(1) if match else None


def nvidia_driver_reboot_needed(installed_version, loaded_version, nouveau_loaded=False, install=True):
    """A reboot is due when the driver is to be installed and the kernel does not
    run it yet: nothing installed (check mode on a new host), no module or
    another version loaded, or nouveau holding the GPUs."""
    if not install:
        return False
    return bool(nouveau_loaded) or installed_version is None or loaded_version != installed_version


class FilterModule:
    """nvidia_driver role filters."""

    def filters(self):
        return {
            "nvidia_driver_plan": nvidia_driver_plan,
            "nvidia_driver_smi": nvidia_driver_smi,
            "nvidia_driver_installed": nvidia_driver_installed,
            "nvidia_driver_loaded_version": nvidia_driver_loaded_version,
            "nvidia_driver_reboot_needed": nvidia_driver_reboot_needed,
        }
