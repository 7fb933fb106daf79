"""Compiled-code cache for zip imports, baked into the sandbox images only
(the test VM's and the containers').

Ansible ships each module to the host as a zip (AnsiballZ) that Python imports
with zipimport, which cannot keep the bytecode it compiles: every task compiles
ansible.module_utils.basic and its imports again. Natively that is ~0.07 s of
a ~0.3 s task; in the TCG-emulated test VM it is ~2 s of every task. This hook
keeps the compiled code of each zipped source file under CACHE_DIR, keyed by
the SHA-256 of its source and the interpreter's bytecode tag, so identical
sources are compiled once per host. What runs is unchanged: the same source,
compiled by the same compiler; only the compile step is skipped. Any error
falls back to compiling. The zips hold module code only: a task's arguments
travel in the wrapper Ansible pipes to the interpreter, never through here.

scripts/vm-image.sh and scripts/container-image.sh install this file into the
image's site directory with a .pth line that imports it (install_into_image,
run as a script with the image's root folder); real hosts never get
it, so bench/converge.py can measure a host without it (--no-code-cache).
"""

from __future__ import annotations

import marshal
import os
import sys
import zipimport

CACHE_DIR = "/var/cache/sandbox-zipimport"
_compile_source = zipimport._compile_source  # the compiler call zipimport makes
_TAG = f"{sys.implementation.cache_tag}-{sys.hexversion:x}"


def _with_filename(code, filename: str):
    """The code object with co_filename set to where this copy was imported
    from (tracebacks then name the current payload, not the first one)."""
    if code.co_filename == filename:
        return code
    consts = tuple(_with_filename(const, filename) if isinstance(const, type(code)) else const
                   for const in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def cached_compile(pathname: str, source: bytes, cache_dir: str = CACHE_DIR):
    """zipimport._compile_source with a cache in front of it."""
    path = None
    try:
        import hashlib  # here, not at start-up: most guest processes never import from a zip

        digest = hashlib.sha256(source if isinstance(source, bytes) else source.encode()).hexdigest()
        path = os.path.join(cache_dir, f"{digest}.{_TAG}.code")
        with open(path, "rb") as cached:
            return _with_filename(marshal.load(cached), pathname)
    except Exception:  # noqa: BLE001 - not cached yet, or unreadable: compile
        pass
    code = _compile_source(pathname, source)
    if path is not None:
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            partial = f"{path}.{os.getpid()}"
            with open(partial, "wb") as out:
                marshal.dump(code, out)
            os.replace(partial, path)
        except OSError:
            pass  # no cache this time; the code itself is fine
    return code


def install() -> None:
    zipimport._compile_source = cached_compile


def install_into_image(rootfs: str, version: str | None = None) -> str:
    """Copy this file into the site directory of the image built under rootfs
    (for its python3, or the X.Y version given), with the .pth line that imports
    it at every interpreter start; returns that directory. Both image scripts
    call it (`python3 this-file ROOTFS`)."""
    import shutil
    import subprocess

    if version is None:
        version = subprocess.run(["chroot", rootfs, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
    site = os.path.join(rootfs, f"usr/local/lib/python{version}/dist-packages")
    os.makedirs(site, mode=0o755, exist_ok=True)
    shutil.copyfile(__file__, os.path.join(site, "sandbox_zipimport_cache.py"))
    with open(os.path.join(site, "sandbox-zipimport-cache.pth"), "w", encoding="ascii") as pth:
        pth.write("import sandbox_zipimport_cache\n")
    for name in ("sandbox_zipimport_cache.py", "sandbox-zipimport-cache.pth"):
        os.chmod(os.path.join(site, name), 0o644)
    return site


if __name__ == "__main__":
    print(install_into_image(sys.argv[1]))
elif os.geteuid() == 0:
    install()
