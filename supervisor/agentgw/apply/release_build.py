"""``agentgw release build``: a release tree made with pip, from wheels only.

SRC (the runtime's own code, optional) is copied, then pip installs the requirements (or every
wheel of a wheelhouse) into the same tree with ``--target``: the flat layout a gateway imports
through its one PYTHONPATH entry. ``--only-binary=:all:`` means no package's build code runs
(as root) while the tree is made; ``--no-compile`` keeps bytecode out, so the same inputs give
the same files and the same content digest. The tree is then added like ``release add``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentgw.errors import AgentgwError, usage
from agentgw.run import run

# Never copied from SRC: caches and the repository itself are not part of a runtime.
SKIP_NAMES = frozenset({"__pycache__", ".git"})
PIP_TIMEOUT_S = 900.0


def copy_source(src: Path, tree: Path) -> None:
    """SRC's files into ``tree``, read like ``release add`` reads a source (directory fds,
    O_NOFOLLOW, the inode scanned), skipping caches and .git."""
    from agentgw.apply.release_source import open_source

    with open_source(src) as source:
        for index, entry in enumerate(source.entries):
            parts = entry.name.split("/")
            if any(p in SKIP_NAMES for p in parts) or entry.name.endswith(".pyc"):
                continue
            dest = tree / entry.name
            if entry.kind == "dir":
                dest.mkdir(mode=0o755)
            elif entry.kind == "symlink":
                dest.symlink_to(entry.link)
            elif entry.kind == "file":
                with source.open(index) as stream, open(dest, "xb") as out:
                    shutil.copyfileobj(stream, out)
                dest.chmod(0o755 if entry.mode & 0o111 else 0o644)
            else:
                raise usage(f"{src / entry.name}: a {entry.kind} cannot be part of a release",
                            hint="a release holds regular files, directories and symlinks")


def check_inputs(src: Path | None, requirements: Path | None, wheelhouse: Path | None) -> None:
    if requirements is None and wheelhouse is None:
        raise usage(
            "release build needs --requirements FILE or --wheelhouse DIR",
            hint="a tree without dependencies is added as it is: agentgw release add SRC --sha ...",
        )
    if src is not None and not src.is_dir():
        raise usage(f"{src} is not a directory", hint="SRC is the runtime's source tree")
    if wheelhouse is not None and not any(wheelhouse.glob("*.whl")):
        raise usage(
            f"{wheelhouse} holds no wheels (*.whl)",
            hint="fill it with: pip download -d DIR -r requirements.txt --only-binary=:all:",
        )


def interpreter_version(python: Path) -> str:
    """``X.Y`` of the interpreter the gateways run (wheels must be built for it)."""
    done = run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=30)
    return done.stdout.strip()


def pip_argv(
    target: Path, requirements: Path | None, wheelhouse: Path | None, python_version: str
) -> list[str]:
    """pip, run by agentgw's own interpreter, installing into ``target`` for ``python_version``."""
    argv = [
        sys.executable, "-m", "pip", "install", "--target", os.fspath(target),
        "--only-binary=:all:", "--no-compile", "--no-cache-dir", "--no-input",
        "--disable-pip-version-check", "--no-warn-script-location",
    ]
    if python_version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        argv += ["--python-version", python_version]
    if wheelhouse is not None:
        argv += ["--no-index", "--find-links", os.fspath(wheelhouse)]
    if requirements is not None:
        argv += ["--requirement", os.fspath(requirements)]
    elif wheelhouse is not None:
        argv += sorted(os.fspath(w) for w in wheelhouse.glob("*.whl"))
    return argv


@contextmanager
def built_tree(
    src: Path | None,
    requirements: Path | None,
    wheelhouse: Path | None,
    python: Path,
    scratch: Path,
) -> Iterator[Path]:
    """A temporary tree (root-only, under ``scratch``): SRC's files plus the installed wheels."""
    check_inputs(src, requirements, wheelhouse)
    version = interpreter_version(python)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentgw-build-", dir=scratch) as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        if src is not None:
            copy_source(src, tree)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PIP_NO_INPUT": "1"}
        done = run(pip_argv(tree, requirements, wheelhouse, version), check=False, env=env,
                   timeout=PIP_TIMEOUT_S)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            last = errors[-1] if errors else f"exit {done.returncode}"
            raise AgentgwError(
                f"pip could not install the dependencies: {last}",
                hint="every dependency needs a wheel for this interpreter "
                f"(Python {version}); with --wheelhouse, pip download them into it first",
            )
        yield tree
