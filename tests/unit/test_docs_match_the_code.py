"""The READMEs and the code name the same variables.

Pure file reading (PyYAML, ast, re): no Ansible run, no network. Three proofs:

- every variable a role has (``defaults/main.yml`` and every entry point of
  ``meta/argument_specs.yml``) has a row in its README's variables table;
- every backticked name in a README that looks like one of the project's
  variables is defined somewhere in the code;
- where a role's argument spec and its defaults file both give a plain
  default for an option, they give the same one.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]
ROLES_DIR = PROJECT / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "meta" / "argument_specs.yml").is_file())
READMES = [PROJECT / "README.md", PROJECT / "files" / "README.md", *(ROLES_DIR / role / "README.md" for role in ROLES)]

# A backticked token "looks like a variable" when it is snake_case with at
# least one underscore and starts with one of the project's prefixes: a role's
# name (every variable a role reads carries it) or one of the site-wide
# families the inventories, playbooks and vault use. Anything else in
# backticks (file names, modules, CLI flags, sysctl keys, nginx directives)
# is not checked.
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
SITE_PREFIXES = (
    "llm_",        # site-wide settings and facts shared by roles (llm_secrets_dir, llm_address)
    "vault_",      # secrets from ansible-vault (inventory/example/vault.yml.example)
    "admin_",      # admin_cidrs
    "client_",     # client_cidrs
    "api_",        # api_client_cidrs
    "nvidia_",     # nvidia_expected_gpu_count (site-wide alias)
    "sandbox_",    # the sandbox's inventory groups and settings
    "update_",     # playbooks/update.yml
    "rotate_",     # playbooks/rotate-*.yml
    "verify_",     # playbooks/verify.yml
    "preflight_",  # playbooks/preflight.yml
    "backup_",     # playbooks/backup.yml
    "restore_",    # playbooks/restore.yml
)
PREFIXES = tuple(f"{role}_" for role in ROLES) + SITE_PREFIXES

# Names a README may use in backticks that look like variables but that no
# rule above can find defined. Keep it short; each entry needs a reason.
ALLOWED_UNDEFINED: dict[str, str] = {
    # roles/hardening/README.md: the score Lynis writes to /var/log/lynis-report.dat.
    "hardening_index": "a field of Lynis's report, not a variable",
}

BACKTICKED = re.compile(r"`([^`\n]+)`")
TABLE_ROW_FIRST_CELL = re.compile(r"^\|([^|\n]*)\|", re.M)
SET_FACT = {"set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"}
INCLUDE_VARS = {"include_vars", "ansible.builtin.include_vars", "ansible.legacy.include_vars"}
ADD_HOST = {"add_host", "ansible.builtin.add_host", "ansible.legacy.add_host"}
ADD_HOST_ARGS = {"name", "hostname", "host", "groups", "group", "groupname"}
# A configuration key a role's template writes: a bare word opening a line
# (nginx's client_body_buffer_size, sshd keywords, sysctl names).
TEMPLATE_KEY = re.compile(r"^[ \t]*([a-z][a-z0-9_]*)(?=[ \t=:])", re.M)
# A name the code reads as an optional input: `name | default(...)`,
# `name is defined`, `name is not defined` (not `x.name`, not hostvars[...]).
OPTIONAL_READ = re.compile(r"(?<![\w.\]'\"])([a-z][a-z0-9_]*)\s*(?:\|\s*default\b|is\s+(?:not\s+)?defined\b)")


class _AnyTagLoader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's tags (!vault, !unsafe) as their plain value."""


def _construct_untagged(loader, _suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)


_AnyTagLoader.add_multi_constructor("!", _construct_untagged)


@cache
def load_yaml(path: Path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_AnyTagLoader)  # noqa: S506 - SafeLoader subclass


def rel(path: Path) -> str:
    return str(path.relative_to(PROJECT))


def top_level_keys(path: Path) -> set[str]:
    data = load_yaml(path) if path.is_file() else None
    return set(data) if isinstance(data, dict) else set()


def yaml_files(*roots: Path) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(sorted(p for p in root.rglob("*") if p.suffix in {".yml", ".yaml"}))
    return files


def role_defaults(role: str) -> dict:
    data = load_yaml(ROLES_DIR / role / "defaults" / "main.yml")
    return data if isinstance(data, dict) else {}


def role_spec_options(role: str) -> dict[str, dict[str, dict]]:
    """Entry point -> {option: spec} from the role's meta/argument_specs.yml."""
    specs = (load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {}
    return {entry: (spec or {}).get("options") or {} for entry, spec in specs.items()}


def names_set_in_plays(node, found: set[str]) -> None:
    """Variables a task, handler or play defines: vars, set_fact, register, loop_var, add_host, ..."""
    if isinstance(node, list):
        for item in node:
            names_set_in_plays(item, found)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in {"vars", "host_vars", "group_vars"} and isinstance(value, dict):
            found.update(value)
            if key != "vars":  # molecule's inventory: {host or group: {var: value}}
                for per_name in value.values():
                    if isinstance(per_name, dict):
                        found.update(per_name)
        elif key in SET_FACT and isinstance(value, dict):
            found.update(k for k in value if k != "cacheable")
        elif key in ADD_HOST and isinstance(value, dict):
            found.update(k for k in value if k not in ADD_HOST_ARGS)
        elif key in INCLUDE_VARS and isinstance(value, dict) and isinstance(value.get("name"), str):
            found.add(value["name"])
        elif key == "register" and isinstance(value, str):
            found.add(value)
        elif key == "loop_control" and isinstance(value, dict):
            found.update(v for k, v in value.items() if k in {"loop_var", "index_var"} and isinstance(v, str))
        elif key == "vars_prompt" and isinstance(value, list):
            found.update(p["name"] for p in value if isinstance(p, dict) and "name" in p)
        names_set_in_plays(value, found)


def inventory_names(node, found: set[str]) -> None:
    """Group names, host names and their variables from a YAML inventory (hosts.yml)."""
    if not isinstance(node, dict):
        return
    for group, body in node.items():
        found.add(group)
        if not isinstance(body, dict):
            continue
        found.update(body.get("vars") or {})
        for host, host_vars in (body.get("hosts") or {}).items():
            found.add(host)
            found.update(host_vars or {})
        inventory_names(body.get("children") or {}, found)


def molecule_inventory_names(path: Path, found: set[str]) -> None:
    """Platform names and their groups from a molecule.yml."""
    for platform in (load_yaml(path) or {}).get("platforms") or []:
        found.update([platform["name"]] if "name" in platform else [])
        found.update(platform.get("groups") or [])


def python_plugin_names(role_dir: Path) -> set[str]:
    """Filters registered by filter_plugins/*.py and the modules in library/*.py."""
    found = {p.stem for p in (role_dir / "library").glob("*.py")}
    for plugin in (role_dir / "filter_plugins").glob("*.py"):
        tree = ast.parse(plugin.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef) and func.name == "filters":
                for ret in ast.walk(func):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Dict):
                        found.update(k.value for k in ret.value.keys if isinstance(k, ast.Constant))
    return found


@cache
def defined_names() -> frozenset[str]:
    found: set[str] = set(ROLES)
    for role in ROLES:
        role_dir = ROLES_DIR / role
        found |= top_level_keys(role_dir / "defaults" / "main.yml")
        found |= top_level_keys(role_dir / "vars" / "main.yml")
        for options in role_spec_options(role).values():
            found.update(options)
        found |= python_plugin_names(role_dir)
    # Inventories: group_vars/host_vars files (or folders of files) and hosts.yml.
    for inventory in sorted((PROJECT / "inventory").iterdir()):
        for path in yaml_files(inventory / "group_vars", inventory / "host_vars"):
            found |= top_level_keys(path)
        inventory_names(load_yaml(inventory / "hosts.yml") if (inventory / "hosts.yml").is_file() else {}, found)
        example_vault = inventory / "vault.yml.example"
        if example_vault.is_file():  # its optional entries are commented out: read the names, not the YAML
            found.update(re.findall(r"^#?\s*(vault_[a-z0-9_]+):", example_vault.read_text(encoding="utf-8"), re.M))
    # Plays, tasks and handlers.
    plays = yaml_files(PROJECT / "site.yml", PROJECT / "playbooks", PROJECT / "molecule",
                       *(ROLES_DIR / role / sub for role in ROLES for sub in ("tasks", "handlers")))
    for path in plays:
        names_set_in_plays(load_yaml(path), found)
    for path in (PROJECT / "molecule").glob("*/host_vars/*.yml"):
        found |= top_level_keys(path)
    for path in (PROJECT / "molecule").glob("*/molecule.yml"):
        molecule_inventory_names(path, found)
    for template in ROLES_DIR.glob("*/templates/*.j2"):
        found.update(TEMPLATE_KEY.findall(template.read_text(encoding="utf-8")))
    # Optional inputs the code reads with a fallback (e.g. nvidia_expected_gpu_count | default(0)).
    sources = [*plays, *(p for p in ROLES_DIR.rglob("*") if p.suffix in {".yml", ".j2"})]
    for path in sources:
        found.update(OPTIONAL_READ.findall(path.read_text(encoding="utf-8")))
    return frozenset(found)


def looks_like_variable(token: str) -> bool:
    return bool(SNAKE.match(token)) and token.startswith(PREFIXES)


def backticked(path: Path) -> set[str]:
    return set(BACKTICKED.findall(path.read_text(encoding="utf-8")))


def table_row_names(path: Path) -> set[str]:
    """Backticked names in the first cell of the README's table rows ("| `a` / `b` | default | meaning |")."""
    return {name for cell in TABLE_ROW_FIRST_CELL.findall(path.read_text(encoding="utf-8"))
            for name in BACKTICKED.findall(cell)}


def test_every_role_variable_is_documented_in_its_readme():
    missing = []
    for role in ROLES:
        readme = ROLES_DIR / role / "README.md"
        documented = table_row_names(readme) if readme.is_file() else set()
        wanted = {name: "defaults/main.yml" for name in role_defaults(role)}
        for entry, options in role_spec_options(role).items():
            for name in options:
                wanted.setdefault(name, f"meta/argument_specs.yml ({entry})")
        missing += [f"roles/{role}/README.md lacks `{name}` (from roles/{role}/{source})"
                    for name, source in sorted(wanted.items()) if name not in documented]
    assert not missing, ("Document each in its role README's variables table, a row "
                         "'| `name` | default | meaning |' with the default and meaning from the defaults file "
                         "or the argument spec:\n") + "\n".join(missing)


def test_every_variable_a_readme_names_is_defined_in_the_code():
    defined = defined_names()
    unknown = [f"{rel(readme)}: `{token}`"
               for readme in READMES
               for token in sorted(backticked(readme))
               if looks_like_variable(token) and token not in defined and token not in ALLOWED_UNDEFINED]
    assert not unknown, ("These READMEs name variables nothing defines (a typo, a renamed or a removed "
                         "variable?):\n" + "\n".join(unknown))


def test_the_allow_list_holds_only_names_that_need_it():
    # An entry that the code now defines, or that no README uses, is stale.
    used = set().union(*(backticked(readme) for readme in READMES))
    stale = [name for name in ALLOWED_UNDEFINED if name in defined_names() or name not in used]
    assert not stale, f"Remove from ALLOWED_UNDEFINED: {stale}"


def _plain(value) -> bool:
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_plain(item) for item in value.values())
    return isinstance(value, (int, float, bool)) or value is None


def test_argument_spec_defaults_equal_the_role_defaults():
    differ = []
    for role in ROLES:
        defaults = role_defaults(role)
        for entry, options in role_spec_options(role).items():
            for name, spec in options.items():
                if not isinstance(spec, dict) or "default" not in spec or name not in defaults:
                    continue
                in_spec, in_defaults = spec["default"], defaults[name]
                if not (_plain(in_spec) and _plain(in_defaults)):
                    continue
                if in_spec != in_defaults or type(in_spec) is not type(in_defaults):
                    differ.append(f"roles/{role}: {name}: argument_specs.yml ({entry}) says {in_spec!r}, "
                                  f"defaults/main.yml says {in_defaults!r}")
    assert not differ, "Argument spec and defaults disagree:\n" + "\n".join(differ)
