"""One revision of muster as code that runs: its tree exported from git, the requirements it declares, and the
environment each of its services reads (the names changed over time: the worker's id was MUSTER_WORKER_WORKER_ID
before issue 13 and MUSTER_WORKER_ID after it).

The names are not written down here per revision: they are read from the revision's own settings classes
(bench/_probe.py, run inside the exported tree), and what the services make of the environment they are given is
checked the same way before any number is taken.
"""

import io
import os
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from packaging.requirements import Requirement

from bench.harness import ROOT, MusterStack

PROBE = (Path(__file__).parent / "_probe.py").read_text()

# What each role is given: the key of a value (start_muster's values or CONSTANTS), the names the field has had
# (newest first), and whether a revision that reads none of them cannot be measured.
WANTED: dict[str, list[tuple[str, tuple[str, ...], bool]]] = {
    "discovery": [("servers", ("servers", "servers_dir"), True), ("prefix_mode", ("prefix_mode",), False)],
    "worker": [("worker_id", ("id", "worker_id"), True)],
    "ingress": [
        ("port", ("port",), True),
        ("queue_limit", ("queue_limit",), False),
        ("max_pending", ("max_pending",), False),
        ("max_pending_per_server", ("max_pending_per_server",), False),
    ],
}
EVERY_ROLE = [("valkey_url", ("valkey_url",), True), ("log_level", ("log_level",), False)]
# As bench/harness.py runs muster: INFO writes the per-call log line (so it is measured), and the queue bounds are
# far above any load here.
CONSTANTS = {
    "log_level": "INFO",
    "prefix_mode": "always",
    "queue_limit": "50000",
    "max_pending": "50000",
    "max_pending_per_server": "50000",
}


class RevisionError(Exception):
    """A revision cannot be measured as asked: not a commit, a setting it does not read, code not its own."""


@dataclass
class Revision:
    label: str  # base or head: also the tag of its stack's processes and folders
    rev: str  # as the caller named it
    commit: str
    subject: str
    tree: Path
    classes: dict[str, str] = field(default_factory=dict)  # role -> its settings class
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> value key -> variable it reads
    unread: dict[str, list[str]] = field(default_factory=dict)  # role -> optional values this revision has no field for
    fields: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> value key -> field name
    extra: dict[str, str] = field(default_factory=dict)  # variables given to every role as they are (--head-env)

    def environment(self, role: str, values: dict[str, str]) -> dict[str, str]:
        """The variables that give `role` of this revision `values` (plus CONSTANTS), the extra ones, and its
        code's path."""
        given = {**CONSTANTS, **values}
        named = {name: given[key] for key, name in self.names[role].items()}
        return {"PYTHONPATH": str(self.tree), **named, **self.extra}

    def record(self) -> dict[str, Any]:
        return {
            "rev": self.rev,
            "commit": self.commit,
            "subject": self.subject,
            "settings": self.classes,
            "names": self.names,
            "unread": self.unread,
            "env": self.extra,
        }


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RevisionError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def export(label: str, rev: str, into: Path) -> Revision:
    """The tree of `rev` in into/<label> (git archive: nothing is added to the repository's worktrees), with the
    environment names its settings classes read."""
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    tree = into / f"tree-{label}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    revision = Revision(label, rev, commit, git("log", "-1", "--format=%s", commit), tree)
    read = probe(tree, "names")
    for role, wanted in WANTED.items():
        fields = read[role]["fields"]
        revision.classes[role] = read[role]["class"]
        if not Path(read[role]["file"]).resolve().is_relative_to(tree.resolve()):
            raise RevisionError(f"{label}: services.{role} was imported from {read[role]['file']}, not from {tree}")
        revision.names[role], revision.fields[role], revision.unread[role] = {}, {}, []
        for key, candidates, required in EVERY_ROLE + wanted:
            found = next((f for f in candidates if f in fields), None)
            if found is None and required:
                raise RevisionError(f"{label} ({rev}): {read[role]['class']} has none of the fields {candidates}")
            if found is None:
                revision.unread[role].append(key)
                continue
            revision.names[role][key] = fields[found][0]
            revision.fields[role][key] = found
    return revision


def verify(revision: Revision, given: dict[str, dict[str, str]], stack: MusterStack) -> None:
    """Checks that each service of `stack` runs this revision's code (its process's working directory and
    PYTHONPATH are the tree) and that its settings read, from the environment it was `given`, the values meant."""
    for role, child in stack.children.items():
        cwd = Path(os.readlink(f"/proc/{child.pid}/cwd"))
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{child.pid}/environ").read_text().split("\0") if "=" in item
        )
        if cwd != revision.tree or environ.get("PYTHONPATH") != str(revision.tree):
            raise RevisionError(f"{revision.label}: {role} runs in {cwd} with PYTHONPATH {environ.get('PYTHONPATH')}")
    spec = {role: {"env": env, "fields": list(revision.fields[role].values())} for role, env in given.items()}
    seen = probe(revision.tree, "values", orjson.dumps(spec).decode())
    for role, env in given.items():
        for key, name in revision.names[role].items():
            got = seen[role][revision.fields[role][key]]
            if got != env[name]:
                raise RevisionError(f"{revision.label}: {role} read {key} = {got!r} from {name}, not {env[name]!r}")


def probe(tree: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RevisionError(f"the settings probe failed in {tree}: {done.stderr.decode()[-2000:]}")
    found: dict[str, Any] = orjson.loads(done.stdout)
    return found


def requirements(commit: str) -> set[str]:
    """The runtime requirements a revision declares (pyproject.toml's [project] dependencies), normalised."""
    project = tomllib.loads(git("show", f"{commit}:pyproject.toml"))["project"]
    return {str(Requirement(r)) for r in project.get("dependencies", [])}


def dependency_change(base: Revision, head: Revision) -> tuple[set[str], set[str]]:
    """What head's requirements drop from base's, and what they add."""
    before, after = requirements(base.commit), requirements(head.commit)
    return before - after, after - before
