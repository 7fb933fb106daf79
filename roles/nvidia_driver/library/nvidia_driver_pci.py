#!/usr/bin/python
# Copyright: private-llm maintainers
# Apache License 2.0 (see the project's README)
"""Find NVIDIA GPUs and NVSwitches on the PCI bus by reading sysfs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_pci
short_description: Find NVIDIA GPUs and NVSwitches on the PCI bus
description:
  - Reads C(vendor), C(device) and C(class) of every device under
    O(root) (C(/sys/bus/pci/devices)). Needs no driver, no C(lspci) and no
    package: it works before anything is installed and changes nothing.
  - A GPU is vendor C(0x10de) with PCI class C(0x0300) (VGA controller) or
    C(0x0302) (3D controller; data-centre GPUs). An NVSwitch is vendor
    C(0x10de) with class C(0x0680) (bridge, other), as the NVSwitch chips of
    HGX boards appear on the host.
  - The GPU generation comes from the PCI device ID ranges NVIDIA allocates
    per chip family; it decides whether the open kernel modules are
    required (Blackwell), supported (Turing and newer) or unsupported
    (Maxwell, Pascal, Volta).
options:
  root:
    description: Directory holding one sub-directory per PCI device.
    type: path
    default: /sys/bus/pci/devices
author: private-llm maintainers
"""

EXAMPLES = r"""
- name: Find NVIDIA GPUs on the PCI bus
  nvidia_driver_pci:
  register: nvidia_driver_pci_scan
"""

RETURN = r"""
gpus:
  description: NVIDIA GPUs, sorted by PCI address.
  returned: always
  type: list
  elements: dict
  sample:
    - address: "0000:18:00.0"
      device_id: "0x2330"
      class: "0x030200"
      architecture: hopper
      open_kernel_modules: supported
nvswitches:
  description: NVIDIA NVSwitch bridges, same keys as O(gpus) minus the generation.
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")
NVSWITCH_CLASS = "0x0680"

# (first, last, family): PCI device ID ranges per chip family. Ranges are
# checked in order, so the narrower ones come first.
ARCHITECTURES = (
    (0x15F0, 0x15FF, "pascal"),  # GP100 (Tesla P100)
    (0x1340, 0x17FF, "maxwell"),  # GM107 .. GM200
    (0x1B00, 0x1D7F, "pascal"),  # GP102 .. GP108
    (0x1D80, 0x1DFF, "volta"),  # GV100 (V100, Titan V)
    (0x1E00, 0x1FFF, "turing"),  # TU102 .. TU117 (T4 is 0x1eb8)
    (0x2080, 0x20FF, "ampere"),  # GA100 (A100, A30)
    (0x2180, 0x21FF, "turing"),  # TU116
    (0x2200, 0x22FF, "ampere"),  # GA102 (A10, A40)
    (0x2300, 0x23FF, "hopper"),  # GH100 (H100, H200, GH200)
    (0x2400, 0x25FF, "ampere"),  # GA103 .. GA107 (A16, A2)
    (0x2600, 0x28FF, "ada"),  # AD102 .. AD107 (L40S, L4)
    (0x2900, 0x2FFF, "blackwell"),  # GB100 .. GB207 (B200, GB200, RTX PRO 6000)
)

# What NVIDIA says about its open kernel modules per family: required on
# Blackwell (and Grace Hopper), recommended from Turing on, not available
# before Turing.
OPEN_MODULES = {
    "maxwell": "unsupported",
    "pascal": "unsupported",
    "volta": "unsupported",
    "legacy": "unsupported",
    "turing": "supported",
    "ampere": "supported",
    "hopper": "supported",
    "ada": "supported",
    "blackwell": "required",
    "unknown": "supported",
}


def architecture(device_id):
    """Chip family for a PCI device ID given as an int or a '0x....' string."""
    value = int(device_id, 16) if isinstance(device_id, str) else int(device_id)
    for first, last, family in ARCHITECTURES:
        if first <= value <= last:
            return family
    # Below the oldest family in the table: Kepler and older, which current
    # driver branches do not support. Above it: a family newer than this table.
    return "legacy" if value < 0x1340 else "unknown"


def classify(devices):
    """Split PCI devices ({address, vendor, device, class}) into GPUs and NVSwitches."""
    gpus, nvswitches = [], []
    for dev in sorted(devices, key=lambda d: d["address"]):
        if dev["vendor"].lower() != NVIDIA_VENDOR:
            continue
        pci_class = dev["class"].lower()
        entry = {"address": dev["address"], "device_id": dev["device"].lower(), "class": pci_class}
        if pci_class.startswith(GPU_CLASSES):
            family = architecture(entry["device_id"])
            entry["architecture"] = family
            entry["open_kernel_modules"] = OPEN_MODULES[family]
            gpus.append(entry)
        elif pci_class.startswith(NVSWITCH_CLASS):
            nvswitches.append(entry)
    return {"gpus": gpus, "nvswitches": nvswitches}


def read_sysfs(root):
    """Read vendor, device and class of every PCI device under root."""
    devices = []
    if not os.path.isdir(root):
        return devices
    for address in os.listdir(root):
        entry = {"address": address}
        try:
            for key in ("vendor", "device", "class"):
                with open(os.path.join(root, address, key), encoding="ascii") as handle:
                    entry[key] = handle.read().strip()
        except OSError:
            continue  # a device that vanished or hides its attributes
        devices.append(entry)
    return devices


def main():
    module = AnsibleModule(
        argument_spec={"root": {"type": "path", "default": "/sys/bus/pci/devices"}},
        supports_check_mode=True,
    )
    root = module.params["root"]
    result = classify(read_sysfs(root))
    module.exit_json(changed=False, sysfs_readable=os.path.isdir(root), **result)


if __name__ == "__main__":
    main()
