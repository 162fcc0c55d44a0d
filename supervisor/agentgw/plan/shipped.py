"""The files agentgw ships beside its code, rendered for where it is installed (pure).

Package data: the systemd units (``data/systemd``, the repo's ``systemd/``). Their sources name
the ``make`` install's venv (:data:`DEFAULT_VENV`); :func:`render_shipped` points them at the
venv agentgw actually runs from (``sys.prefix``: ``/opt/agentgw/venv`` for ``make``,
``/usr/lib/agentgw`` for the Debian package), the way ``relocate`` points the template at a
relocated ``/opt/agent``.

``agentgw init`` writes the units into /etc/systemd/system for a ``make`` install; the Debian
package installs the same renderings into /usr/lib/systemd/system at build time
(``scripts/render-shipped``) and marks its venv with :data:`PACKAGED_MARK`, so ``init`` then
writes no unit at all (a copy in /etc would shadow the package's).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from agentgw.paths import TEMPLATE_UNIT

DEFAULT_VENV = "/opt/agentgw/venv"
# A file in the venv's root that only the Debian package's build writes (debian/rules).
PACKAGED_MARK = "agentgw-packaged"
# The data dirs the Debian package installs as files (scripts/render-shipped). The admin rules
# (data/polkit, data/sudoers) are not among them: they name agentgw.yaml's admin_group, so
# init and apply render and install them (plan/admin.py), with a package as without; its
# purge removes them.
PACKAGE_DIRS = ("systemd",)


@dataclass(frozen=True)
class Install:
    """Where the running agentgw lives, and whether a package owns its shipped units."""

    venv: str = DEFAULT_VENV
    packaged: bool = False

    @property
    def agentgw(self) -> str:
        return f"{self.venv}/bin/agentgw"


# ``make``'s install (scripts/install-venv): the sources as they are.
MAKE_INSTALL = Install()


def _data(kind: str) -> Traversable:
    return resources.files("agentgw") / "data" / kind


def shipped_names(kind: str) -> tuple[str, ...]:
    """Every file of the data dir ``kind`` (``systemd``, ``polkit``, ...), sorted; none when
    the dir is absent."""
    data = _data(kind)
    if not data.is_dir():
        return ()
    return tuple(sorted(p.name for p in data.iterdir() if p.is_file()))


def shipped_units() -> tuple[str, ...]:
    """The units ``init`` installs as shipped: every file in data/systemd but the template
    (which ``render_template`` relocates to the layout's /opt/agent)."""
    return tuple(n for n in shipped_names("systemd") if n != TEMPLATE_UNIT)


def shipped_source(kind: str, name: str) -> str:
    return (_data(kind) / name).read_text()


def render_shipped(text: str, venv: str) -> str:
    """``text`` with the default venv replaced by ``venv`` (identity for a ``make`` install)."""
    return text if venv == DEFAULT_VENV else text.replace(DEFAULT_VENV, venv.rstrip("/"))


def shipped_unit(name: str, install: Install) -> str:
    """A unit of data/systemd rendered for ``install``."""
    return render_shipped(shipped_source("systemd", name), install.venv)
