"""Hash locks of the service venvs (roles/llm): the filters that read a lock
and pip's report, and the entry point venv run for real on this machine with
a wheel made here: the right hash installs exactly the lock, a wrong hash or
a lock made for another Python installs nothing and leaves no complete venv."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "llm" / "filter_plugins"))

from llm import (  # noqa: E402  (the role's filter module)
    llm_lock_mismatch,
    llm_lock_parse,
    llm_lock_report_entries,
    llm_lock_requirements,
)

HEX = "ab" * 32
OTHER = "cd" * 32

LOCK = f"""\
# Ansible managed
# specs: chainlit==2.12.0 openai==3.57.0
# excluded:
# python: 3.11 x86_64
chainlit==2.12.0 --hash=sha256:{HEX}
openai==3.57.0 --hash=sha256:{HEX}
Syncer==2.0.3 --hash=sha256:{HEX}
setuptools==84.2.1 --hash=sha256:{OTHER}  # build tool
"""


def test_a_lock_is_read_into_its_pins_platform_and_entries_with_build_tools_apart():
    lock = llm_lock_parse(LOCK)
    assert lock["errors"] == []
    assert lock["specs"] == ["chainlit==2.12.0", "openai==3.57.0"]
    assert lock["excluded"] == []
    assert lock["python"] == "3.11 x86_64"
    assert [e["name"] for e in lock["entries"]] == ["chainlit", "openai", "syncer", "setuptools"]
    assert [e["name"] for e in lock["entries"] if e["build"]] == ["setuptools"]
    assert llm_lock_requirements(lock, True) == f"setuptools==84.2.1 --hash=sha256:{OTHER}\n"
    assert llm_lock_requirements(lock, False).count("--hash=sha256:") == 4


@pytest.mark.parametrize(
    "text, error",
    [
        (LOCK.replace(f"openai==3.57.0 --hash=sha256:{HEX}", "openai==3.57.0"), "line 6 is not"),
        (LOCK.replace(f"--hash=sha256:{OTHER}", "--hash=sha256:1234"), "line 8 is not"),
        (LOCK.replace("# specs: chainlit==2.12.0 openai==3.57.0\n", ""), "no '# specs:' line"),
        (LOCK + f"openai==3.57.0 --hash=sha256:{OTHER}\n", "openai is locked twice"),
    ],
    ids=["no hash", "short hash", "no pins", "twice"],
)
def test_a_damaged_lock_says_which_line(text, error):
    assert any(error in message for message in llm_lock_parse(text)["errors"])


def test_a_lock_fits_only_the_pins_and_the_excluded_names_it_was_made_for():
    lock = llm_lock_parse(LOCK)
    assert llm_lock_mismatch(lock, ["openai==3.57.0", "chainlit==2.12.0"], []) == []
    changed = llm_lock_mismatch(lock, ["chainlit==2.12.0", "openai==1.25.0"], [])
    assert changed == ["it was made for chainlit==2.12.0 openai==3.57.0, the pins are chainlit==2.12.0 openai==1.25.0",
                       "openai==1.25.0 is not among its entries"]
    assert llm_lock_mismatch(lock, ["chainlit==2.12.0", "openai==3.57.0"], ["triton"]) == [
        "it leaves out nothing, the role removes triton"]


def test_pips_report_gives_each_file_its_sha256_and_a_file_without_one_is_refused():
    report = {"install": [
        {"metadata": {"name": "Foo_Bar", "version": "1.0"},
         "download_info": {"url": "https://x/foo_bar-1.0-py3-none-any.whl",
                           "archive_info": {"hash": f"sha256={HEX}", "hashes": {"sha256": HEX}}}},
        {"metadata": {"name": "syncer", "version": "2.0.3"},
         "download_info": {"url": "file:///w/syncer-2.0.3.tar.gz", "archive_info": {"hash": f"sha256={OTHER}"}}},
    ]}
    assert llm_lock_report_entries(report) == [
        {"name": "foo-bar", "version": "1.0", "sha256": HEX, "wheel": True},
        {"name": "syncer", "version": "2.0.3", "sha256": OTHER, "wheel": False},
    ]
    report["install"][1]["download_info"]["archive_info"] = {"hash": "md5=00"}
    with pytest.raises(Exception, match="no sha256 for: syncer"):
        llm_lock_report_entries(report)


# --- The venv entry point, for real -------------------------------------------

TASKS = """\
- name: Install the venv of a lock
  ansible.builtin.include_role:
    name: llm
    tasks_from: venv
"""


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A real, minimal wheel of one module."""
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def platform_line(python: str) -> str:
    return subprocess.run([python, "-c", "import platform, sys; print('%d.%d %s' % (sys.version_info[0], "
                           "sys.version_info[1], platform.machine()))"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def lockcase(tmp_path, run_playbook):
    """Install a venv of tmp_path from a lock naming the wheel made here,
    offline; returns a runner taking the lock's hash and python line."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels, "locktest", "1.0")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    venv = tmp_path / "opt" / "venvs" / "locktest-1.0"

    def run(sha256: str = hashlib.sha256(wheel.read_bytes()).hexdigest(), pyline: str = platform_line(python)):
        lock = (f"# specs: locktest==1.0\n# excluded:\n# python: {pyline}\n"
                f"locktest==1.0 --hash=sha256:{sha256}\n")
        result = run_playbook(TASKS, {
            "llm_venv_root": str(tmp_path / "opt"), "llm_venv": str(venv), "llm_venv_packages": ["locktest==1.0"],
            "llm_venv_python": python, "llm_venv_pip_args": ["--no-index", f"--find-links={wheels}", "--no-compile"],
            "llm_venv_lock": lock, "llm_venv_remove_packages": [], "ansible_python_interpreter": sys.executable})
        return result, venv, lock

    return run


def installed(venv: Path) -> list:
    if not (venv / "bin" / "python").exists():
        return []
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(p["name"] for p in json.loads(out) if p["name"] not in ("pip", "setuptools"))


def test_a_lock_with_the_files_sha256_installs_exactly_it_and_keeps_the_lock(lockcase):
    result, venv, lock = lockcase()
    assert result.returncode == 0, result.stdout[-3000:]
    assert installed(venv) == ["locktest"]
    assert (venv / "requirements-lock.txt").read_text() == lock
    marker = json.loads((venv / ".llm-venv-complete").read_text())
    assert marker["lock_sha256"] == hashlib.sha256(lock.encode()).hexdigest()


def test_a_file_whose_sha256_differs_from_the_lock_is_refused_and_no_venv_is_complete(lockcase):
    result, venv, _ = lockcase(sha256=OTHER)
    assert result.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stdout, result.stdout[-3000:]
    assert installed(venv) == []
    assert not (venv / ".llm-venv-complete").exists()


def test_a_lock_made_for_another_python_is_refused_before_pip_runs(lockcase):
    result, venv, _ = lockcase(pyline="3.99 riscv64")
    assert result.returncode != 0
    assert "The hash lock was made for Python 3.99 riscv64" in result.stdout, result.stdout[-3000:]
    assert installed(venv) == []
    assert not (venv / ".llm-venv-complete").exists()
