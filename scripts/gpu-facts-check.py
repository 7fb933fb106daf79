#!/usr/bin/env python3
"""Check the nvidia_driver role's GPU facts on a real GPU host (device check).

Runs the role's own PCI detection (library/nvidia_driver_pci.py) and its
nvidia-smi parser (filter_plugins/nvidia_driver.py) on this machine, prints the
facts the role would set, and fails when PCI and the driver disagree or a GPU
is unhealthy. Raw outputs go to $OUT (or ./gpu-facts-out) so they can become
unit-test samples. Needs no Ansible installed.

Usage: scripts/gpu-facts-check.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

ROLE = Path(__file__).resolve().parent.parent / "roles" / "nvidia_driver"
QUERY = "--query-gpu=index,name,memory.total,pci.bus_id,persistence_mode,driver_version"


def load(path: Path, name: str):
    if "ansible.module_utils.basic" not in sys.modules:
        try:
            import ansible.module_utils.basic  # noqa: F401
        except ImportError:  # only AnsibleModule's name is needed to import the module
            for mod in ("ansible", "ansible.module_utils", "ansible.module_utils.basic"):
                sys.modules[mod] = types.ModuleType(mod)
            sys.modules["ansible.module_utils.basic"].AnsibleModule = object
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    out = Path(os.environ.get("OUT", "gpu-facts-out"))
    out.mkdir(parents=True, exist_ok=True)
    pci = load(ROLE / "library" / "nvidia_driver_pci.py", "nvidia_driver_pci")
    filters = load(ROLE / "filter_plugins" / "nvidia_driver.py", "nvidia_driver_filters")

    devices = pci.read_sysfs("/sys/bus/pci/devices")
    (out / "pci-devices.json").write_text(json.dumps(devices, indent=1))
    scan = pci.classify(devices)
    smi = subprocess.run(["nvidia-smi", QUERY, "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False)
    (out / "nvidia-smi-query.csv").write_text(smi.stdout)
    full = subprocess.run(["nvidia-smi", "-q"], capture_output=True, text=True, check=False)
    (out / "nvidia-smi-q.txt").write_text(full.stdout)
    parsed = filters.nvidia_driver_smi(smi.stdout)

    facts = {
        "nvidia_driver_pci_gpus": scan["gpus"],
        "nvidia_driver_nvswitches": scan["nvswitches"],
        "nvidia_driver_gpu_count": len(parsed["gpus"]),
        "nvidia_driver_gpu_models": [g["name"] for g in parsed["gpus"]],
        "nvidia_driver_gpu_memory_mib": [g["memory_total_mib"] for g in parsed["gpus"]],
        "nvidia_driver_gpus": parsed["gpus"],
        "smi_messages": parsed["messages"],
        "smi_returncode": smi.returncode,
    }
    print(json.dumps(facts, indent=2))
    problems = []
    if smi.returncode != 0:
        problems.append(f"nvidia-smi exited {smi.returncode}: {smi.stderr.strip()}")
    if not parsed["gpus"]:
        problems.append("the parser found no GPU in nvidia-smi's output")
    if scan["gpus"] and len(scan["gpus"]) != len(parsed["gpus"]):
        problems.append(f"PCI shows {len(scan['gpus'])} GPUs, nvidia-smi {len(parsed['gpus'])}")
    if not scan["gpus"]:
        print("note: no NVIDIA GPU visible under /sys/bus/pci/devices (virtualised PCI?)")
    problems += [f"GPU {g['index']} unhealthy: {g['problems']}" for g in parsed["gpus"] if not g["healthy"]]
    print("RESULT:", "FAIL " + "; ".join(problems) if problems else "PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
