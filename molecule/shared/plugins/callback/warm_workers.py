"""Callback plugin for the test harness: cheaper worker processes on the controller.

Ansible forks a worker process for every host of every task. Two costs repeat
in each worker unless the parent pays them once, before the first fork:

- the filter and test plugins: Jinja looks them up the first time a template
  needs one, and the parent, which templates little itself, has not loaded
  them, so each worker imported ansible.builtin's plugin files again;
- the garbage collector: its first pass in a worker walks every object the
  parent had, writing to their pages, so the kernel copies them all.

At each play's start this loads every filter and test plugin the loaders
know, collects, and freezes what the parent holds (gc.freeze(): the
collector leaves those objects alone; the workers' own objects are collected
as before). Nothing about what runs changes: the same plugins, the same
templates, the same modules. Measured on the bad-input run (36 aliases of one
host, stock Ansible, 2 cores): the controller's CPU 164 s -> 115 s and
160 -> 109 s in two pairs of runs, wall 105 -> 79 s and 102 -> 77 s; the
plugins alone 136 s, the freeze alone no gain.

Enabled by the Molecule scenarios' ansible.cfg and by
molecule/shared/playbook_report.py for the tests' own runs; real runs of the
project do not load it.
"""

from __future__ import annotations

import gc

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader, test_loader

DOCUMENTATION = """
name: warm_workers
type: aggregate
short_description: Load Jinja plugins and freeze the heap before Ansible forks its workers
description:
  - Test-harness plugin of this project (molecule/shared). At each play's start it loads every
    filter and test plugin and calls gc.freeze(), so that forked workers neither import those
    plugins again nor copy the parent's memory when their garbage collector first runs.
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "warm_workers"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play) -> None:
        for loader in (filter_loader, test_loader):
            for _plugin in loader.all():
                pass
        gc.collect()
        gc.freeze()
