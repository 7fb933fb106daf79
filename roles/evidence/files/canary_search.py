"""Search files and the journal for a canary string; print where it was found.

Runs on the host (python3 -c). The canary arrives on stdin, reversed and
base64-encoded, so that neither this program's arguments nor the module
arguments Ansible writes to a temporary file hold it (a search must not plant
what it looks for). The folders to search are the arguments; folders named
venv (installed packages, gigabytes) are skipped. Prints one place per line.
"""
import base64
import os
import subprocess
import sys

canary = base64.b64decode(sys.stdin.read().strip())[::-1]
hits = []
for top in sys.argv[1:]:
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "venv"]
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as handle:
                    tail = b""
                    while chunk := handle.read(1 << 20):
                        if canary in tail + chunk:
                            hits.append(path)
                            break
                        tail = chunk[-len(canary):]
            except OSError:
                continue
journal = subprocess.run(["journalctl", "--no-pager", "-o", "export"], capture_output=True, check=False).stdout
if canary in journal:
    hits.append("journal")
print("\n".join(hits))
