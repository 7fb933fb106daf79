"""The model weights are staged as a verified release: every file the
manifest lists is under current, matches its sha256 on the host, is owned by
root and readable (never writable) by the service group only.

Sums are not hard-coded: the manifest is read from the host's current release
(the role writes it there only after every file verified)."""

from __future__ import annotations

import os
import shlex

import pytest

testinfra_hosts = ["llm_servers"]

DEFAULT_ROOT = "/srv/models"
DEFAULT_NAME = "Qwen3-4B-Instruct-2507"
DEFAULT_GROUP = "llm"
DEFAULT_MANIFEST = "SHA256SUMS"
NOBODY = 65534


def _setting(variables, name, default):
    value = variables.get(name, default)
    # A templated inventory value ("{{ ... }}") is not resolved here.
    return default if not isinstance(value, str) or "{{" in value else value


@pytest.fixture(scope="module")
def settings(host):
    variables = host.ansible.get_variables()
    root = _setting(variables, "model_staging_root",
                    _setting(variables, "model_volume_mount_path", DEFAULT_ROOT))
    name = _setting(variables, "model_staging_name", DEFAULT_NAME)
    base = os.path.join(root, name)
    return {
        "base": base,
        "current": os.path.join(base, "current"),
        "releases": os.path.join(base, "releases"),
        "group": _setting(variables, "model_staging_group", DEFAULT_GROUP),
        "manifest": _setting(variables, "model_staging_manifest", DEFAULT_MANIFEST),
        "keep": int(variables.get("model_staging_keep_releases", 2)),
    }


@pytest.fixture(scope="module")
def manifest(host, settings):
    """{file name: sha256} from the current release's verified manifest."""
    text = host.file(os.path.join(settings["current"], settings["manifest"])).content_string
    entries = dict(reversed(line.split("  ", 1)) for line in text.splitlines() if line.strip())
    assert entries, "the current release's manifest lists no files"
    return entries


@pytest.fixture(scope="module")
def group_id(host, settings):
    return host.group(settings["group"]).gid


def quoted(paths):
    return " ".join(shlex.quote(path) for path in paths)


def as_service_group(host, group_id, command):
    """Run command as an unprivileged user whose only group is the service group."""
    return host.run(f"setpriv --reuid={NOBODY} --regid={group_id} --clear-groups -- {command}")


def as_stranger(host, command):
    """Run command as nobody:nogroup (not in the service group)."""
    return host.run(f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- {command}")


def test_current_is_a_symlink_into_releases(host, settings):
    current = host.file(settings["current"])
    assert current.is_symlink
    target = host.check_output("readlink -f %s", settings["current"])
    assert os.path.dirname(target) == host.check_output("readlink -f %s", settings["releases"])
    assert host.file(target).is_directory


def test_every_manifest_file_is_present_under_current(host, settings, manifest):
    paths = quoted(os.path.join(settings["current"], name) for name in manifest)
    kinds = host.check_output(f"stat -L -c '%F' {paths}").splitlines()
    assert kinds == ["regular file"] * len(manifest), dict(zip(manifest, kinds))
    # The tiny test model (and the real one) is a Qwen3 checkpoint.
    assert "config.json" in manifest
    assert any(name.endswith(".safetensors") for name in manifest)


def test_manifest_verifies_on_the_host(host, settings):
    result = host.run("cd %s && sha256sum --strict -c %s", settings["current"], settings["manifest"])
    assert result.rc == 0, result.stdout + result.stderr


def test_weights_are_root_owned_and_closed_to_others(host, settings, manifest):
    release = host.check_output("readlink -f %s", settings["current"])
    directories = [settings["base"], settings["releases"], release]
    files = [os.path.join(release, name) for name in [*manifest, settings["manifest"]]]
    listing = host.check_output(f"stat -c '%U %G %a %n' {quoted(directories + files)}")
    owners = {line.split(" ", 3)[3]: tuple(line.split(" ", 3)[:3]) for line in listing.splitlines()}
    for path in directories:
        assert owners[path] == ("root", settings["group"], "750"), path
    for path in files:
        assert owners[path] == ("root", settings["group"], "640"), path


def test_service_group_can_read_the_weights(host, settings, group_id, manifest):
    paths = quoted(os.path.join(settings["current"], name) for name in manifest)
    result = as_service_group(host, group_id, f"sha256sum -- {paths}")
    assert result.rc == 0, result.stderr
    read = {os.path.basename(line.split("  ", 1)[1]): line.split()[0] for line in result.stdout.splitlines()}
    assert read == manifest


def test_service_group_cannot_change_the_weights(host, settings, group_id, manifest):
    current = settings["current"]
    some_file = os.path.join(current, sorted(manifest)[0])
    attempts = [
        f"sh -c 'echo x >> {some_file}'",
        f"touch {current}/planted",
        f"rm -f {some_file}",
        f"ln -sfn /tmp {settings['base']}/current",
    ]
    for command in attempts:
        assert as_service_group(host, group_id, command).rc != 0, command
    assert not host.file(f"{current}/planted").exists
    assert host.run("cd %s && sha256sum --quiet -c %s", current, settings["manifest"]).rc == 0


def test_users_outside_the_service_group_cannot_read_the_weights(host, settings, manifest):
    path = os.path.join(settings["current"], sorted(manifest)[0])
    assert as_stranger(host, f"cat {path}").rc != 0
    assert as_stranger(host, f"ls {settings['base']}").rc != 0


def test_only_verified_releases_are_kept(host, settings):
    releases = host.file(settings["releases"]).listdir()
    assert 1 <= len(releases) <= settings["keep"], releases
    for release in releases:
        stamp = os.path.join(settings["releases"], release, settings["manifest"])
        assert host.file(stamp).is_file, f"release {release} has no verified manifest"
