"""The whole role on this machine (connection local, everything under a
temporary root): stages and verifies, changes nothing on a re-run, refuses a
corrupted copy while the good release keeps serving, catches a damaged
serving copy on request and repairs it, and switches to a changed model. The same is proven on a systemd container by
molecule/default/tests/test_model_staging.py."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT

ROLE = "- ansible.builtin.include_role:\n    name: model_staging\n"


def recap(result):
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+).*failed=(\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return {"ok": int(match[1]), "changed": int(match[2]), "failed": int(match[3])}


def write_manifest(directory):
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(directory.iterdir()) if p.name != "SHA256SUMS"]
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One model root for the whole module: the tests run in file order, as
    successive runs of the playbook on one host would."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def stage(run_playbook, root):

    def run(source, **extra):
        return run_playbook(ROLE, {
            "model_staging_controller_dir": str(source), "model_staging_root": str(root),
            "model_staging_require_mountpoint": False, "model_staging_group": "root",
            "ansible_python_interpreter": sys.executable, **extra,
        })

    run.base = root / "Qwen3-4B-Instruct-2507"
    return run


def current_release(stage):
    return os.readlink(stage.base / "current")


def test_first_run_stages_and_a_rerun_changes_nothing(stage, tiny_model):
    first = stage(tiny_model)
    assert recap(first)["failed"] == 0, first.stdout
    assert recap(first)["changed"] > 0
    release = current_release(stage)
    assert release.startswith("releases/") and len(release) == len("releases/") + 16
    for line in (tiny_model / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        staged = stage.base / "current" / name
        assert hashlib.sha256(staged.read_bytes()).hexdigest() == digest
        assert oct(staged.stat().st_mode & 0o777) == "0o640"
    assert (stage.base / "current" / "SHA256SUMS").read_text() == (tiny_model / "SHA256SUMS").read_text()

    again = stage(tiny_model)
    assert (recap(again)["changed"], recap(again)["failed"]) == (0, 0), again.stdout
    assert "changed: [localhost] => (item=" not in again.stdout


def test_corrupted_copy_fails_naming_the_file_and_keeps_serving(stage, tiny_model, tmp_path):
    good = current_release(stage)

    # New weights whose copy got damaged after the manifest was made.
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    flip_byte(bad / "model.safetensors", 100000)
    write_manifest(bad)
    expected = hashlib.sha256((bad / "model.safetensors").read_bytes()).hexdigest()
    flip_byte(bad / "model.safetensors", 200000)
    actual = hashlib.sha256((bad / "model.safetensors").read_bytes()).hexdigest()

    result = stage(bad)
    assert result.returncode != 0
    assert f"model.safetensors: expected {expected} (manifest), got {actual} (on the host)" in result.stdout
    assert f"still points at {good} (unchanged)" in result.stdout
    assert current_release(stage) == good
    assert sorted(p.name for p in (stage.base / "releases").iterdir()) == [good.split("/")[1]]
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=stage.base / "current",
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_reverify_catches_a_damaged_serving_copy_and_the_next_run_repairs_it(stage, tiny_model):
    release = current_release(stage)
    flip_byte(stage.base / "current" / "tokenizer.json", 10)
    assert recap(stage(tiny_model))["changed"] == 0  # presence and modes only, by design

    result = stage(tiny_model, model_staging_reverify=True)
    assert result.returncode != 0
    assert "tokenizer.json: expected" in result.stdout and "it stays current" in result.stdout
    assert current_release(stage) == release

    repaired = stage(tiny_model)
    assert recap(repaired)["failed"] == 0, repaired.stdout
    assert "changed: [localhost] => (item=tokenizer.json)" in repaired.stdout
    assert current_release(stage) == release
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=stage.base / "current",
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_changed_model_becomes_a_new_release_and_old_ones_are_pruned(stage, tiny_model, tmp_path):
    first = current_release(stage)
    releases = [first]
    for temperature in ("0.6", "0.5"):
        changed = tmp_path / f"t{temperature}"
        shutil.copytree(tiny_model, changed)
        config = changed / "generation_config.json"
        config.write_text(config.read_text().replace('"temperature": 0.7', f'"temperature": {temperature}'))
        write_manifest(changed)
        result = stage(changed)
        assert recap(result)["failed"] == 0, result.stdout
        assert "RUNNING HANDLER [model_staging : Report the new model release]" in result.stdout
        releases.append(current_release(stage))
        assert f'"temperature": {temperature}' in (stage.base / "current" / "generation_config.json").read_text()
    assert len(set(releases)) == 3
    # Keep 2: the current release and the one it replaced; the first is gone.
    assert sorted(p.name for p in (stage.base / "releases").iterdir()) == sorted(r.split("/")[1] for r in releases[1:])
    # Unchanged weights were linked from the previous release, not sent again.
    current, previous = (stage.base / r / "model.safetensors" for r in releases[:0:-1])
    assert os.stat(current).st_ino == os.stat(previous).st_ino
