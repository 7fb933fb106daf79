"""Ansible's linear strategy, with Mitogen running the modules on the hosts.

Used by the Molecule scenarios only (their molecule.yml names this folder as
`strategy_plugins` and `mitogen_linear` as the strategy); `make setup`
installs Mitogen from PyPI. Stock Ansible starts a new Python on the host for
every module run and unpacks the module again; Mitogen keeps one interpreter
per host and runs the same module code in it, with the same arguments and the
same results. Measured on the sandbox hosts: a no-op `site.yml` on the
container host 116 -> 63 s (the container's own CPU 47 -> 7 s); the QEMU
guest's converge 988 -> 173 s and idempotence 430 -> 77 s, with the same
recap task for task.

Stock Ansible, the executor users run, stays proven where it matters: `make
demo` converges a fresh host with it (site.yml from nothing), and the default
scenario's idempotence step runs with it (scripts/run-tests.py sets
ANSIBLE_STRATEGY=linear), so a result that differed between the two
executors would show there as a change.
"""

from __future__ import annotations

import ansible_mitogen.affinity
import ansible_mitogen.loaders
import ansible_mitogen.strategy

# Mitogen pins Ansible's processes to CPUs of its choosing, and with them
# every process a task starts on the controller (QEMU, podman's containers):
# on a 2-core machine it reserves one core for its multiplexer and puts all
# the rest on the other, which left one core idle while the run crawled. Its
# no-op policy leaves the placement to the kernel's scheduler.
ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()

_LINEAR = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _LINEAR):
    """Ansible's linear strategy with Mitogen's connections."""
