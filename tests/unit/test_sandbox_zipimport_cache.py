"""The sandbox hosts' compiled-code cache for zip imports (scripts/sandbox_zipimport_cache.py):
a module imported from a zip is compiled once and then loaded from the cache,
runs the same, names the zip it came from in tracebacks, and a changed source
is compiled anew. Each case imports in a fresh interpreter, as each Ansible
task does."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# Imports `payload` from the zip given, with the hook installed over the cache
# directory given; prints what the module computed, where its code says it
# came from, and whether the compiler was called. argv: zip, cache dir, "1"
# to make compiling fail (only a cached copy can then be used).
IMPORTER = """
import json, sys, zipimport
sys.path.insert(0, {scripts!r})
import sandbox_zipimport_cache as hook
zip_path, cache_dir, forbid = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
compiled = []
def compile_source(pathname, source):
    if forbid:
        raise SyntaxError("compiling is switched off in this run")
    compiled.append(pathname)
    return original(pathname, source)
original = hook._compile_source
hook._compile_source = compile_source
zipimport._compile_source = lambda pathname, source: hook.cached_compile(pathname, source, cache_dir)
sys.path.insert(0, zip_path)
import payload
print(json.dumps({{"value": payload.value(), "filename": payload.value.__code__.co_filename,
                  "compiled": compiled}}))
"""


def make_zip(path: Path, source: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("payload.py", source)
    return path


def import_from(zip_path: Path, cache_dir: Path, forbid_compile: bool = False) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTER.format(scripts=str(SCRIPTS)), str(zip_path), str(cache_dir),
         "1" if forbid_compile else "0"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_second_import_of_the_same_source_loads_the_cached_code_and_names_its_own_zip(tmp_path):
    cache = tmp_path / "cache"
    source = "def value():\n    return sum(range(10))\n"
    first = import_from(make_zip(tmp_path / "first.zip", source), cache)
    assert first["value"] == 45 and len(first["compiled"]) == 1
    assert len(list(cache.glob("*.code"))) == 1
    assert (cache.stat().st_mode & 0o777) == 0o700

    second = import_from(make_zip(tmp_path / "second.zip", source), cache, forbid_compile=True)
    assert second["value"] == 45 and second["compiled"] == []
    assert second["filename"].startswith(str(tmp_path / "second.zip")), second["filename"]


def test_a_changed_source_is_compiled_again(tmp_path):
    cache = tmp_path / "cache"
    import_from(make_zip(tmp_path / "old.zip", "def value():\n    return 1\n"), cache)
    new = import_from(make_zip(tmp_path / "new.zip", "def value():\n    return 2\n"), cache)
    assert new["value"] == 2 and len(new["compiled"]) == 1
    assert len(list(cache.glob("*.code"))) == 2


def test_an_unwritable_cache_falls_back_to_compiling(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = import_from(make_zip(tmp_path / "mod.zip", "def value():\n    return 3\n"), blocker / "cache")
    assert result["value"] == 3 and result["compiled"]


def test_an_image_gets_the_hook_in_its_site_directory_and_every_root_interpreter_loads_it(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import sandbox_zipimport_cache as hook
    finally:
        sys.path.remove(str(SCRIPTS))
    version = "%d.%d" % sys.version_info[:2]
    site_dir = Path(hook.install_into_image(str(tmp_path), version))
    assert site_dir == tmp_path / f"usr/local/lib/python{version}/dist-packages"
    assert (site_dir / "sandbox_zipimport_cache.py").read_bytes() == (SCRIPTS / "sandbox_zipimport_cache.py").read_bytes()
    assert {oct(path.stat().st_mode & 0o777) for path in site_dir.iterdir()} == {"0o644"}
    # A site directory's .pth lines run at start-up (site.addsitedir does what
    # the image's interpreter does for its own dist-packages).
    probe = ("import site, sys, zipimport; site.addsitedir(sys.argv[1]); "
             "print(zipimport._compile_source.__module__)")
    result = subprocess.run([sys.executable, "-S", "-c", probe, str(site_dir)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "sandbox_zipimport_cache"
