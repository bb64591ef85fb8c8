"""``comfyvn-workbench``: open the workbench on a workspace, from any folder.

    comfyvn-workbench lab   [--workspace DIR] [--port N] [--init] [--dry-run]
    comfyvn-workbench voila [--workspace DIR] [--port N] [--init] [--dry-run]
    comfyvn-workbench demo  [--workspace DIR] [--voila] [--port N] [--dry-run]

``lab`` starts JupyterLab on the shipped notebooks (the workbench opens first), ``voila`` serves
the workbench without code cells, ``demo`` seeds a demo workspace (default ``./demo-workspace``,
idempotent) and opens it.  The workspace is ``--workspace``, else ``COMFYVN_HOME``, else the
current folder; a relative path means the folder the command was typed in, and the server and
its kernels get it as an absolute path.  A folder that is not a workspace is refused unless
``--init`` asks to create one there.  ``--dry-run`` checks everything, prints the command it
would run and starts and creates nothing.  The server listens on 127.0.0.1 only, behind a token;
the URL is printed once the server answers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import NotAWorkspaceError, Workspace, is_workspace, open_existing_workspace, workspace
from .demo import seed

WORKBENCH = "workbench.ipynb"
START_TIMEOUT = 180.0  # seconds for the server to answer (a first JupyterLab start builds its caches)


def notebooks_dir() -> Path:
    """The shipped notebooks: ``comfyvn/notebooks`` of an installed wheel (package data, through
    :mod:`importlib.resources`), else ``notebooks/`` of the checkout this package is imported from
    (an editable install or a bare checkout)."""
    packaged = resources.files("comfyvn") / "notebooks"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[1] / "notebooks"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"the comfyvn notebooks are missing: neither {packaged} nor {checkout} exists; "
                            "reinstall comfyvn-workbench")


def free_port(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


@dataclass
class Launch:
    """What ``lab``/``voila`` runs: the command, its environment and the URLs to wait for and show."""

    mode: str
    ws: Workspace
    notebooks: Path
    port: int
    token: str
    command: list[str]
    env: dict[str, str]
    #: the shipped notebooks JupyterLab's copies in the workspace come from (an installed package:
    #: a saved notebook must land in the workspace, never in site-packages); None serves them as they are
    copy_from: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def url(self) -> str:
        path = f"lab/tree/{WORKBENCH}" if self.mode == "lab" else ""
        return f"{self.base}{path}?token={self.token}"


def plan(mode: str, ws: Workspace, *, port: int = 8888, notebooks: Path | None = None,
         token: str | None = None) -> Launch:
    """The server command for ``mode`` (``lab`` or ``voila``) on ``ws`` (nothing is started)."""
    shipped = (notebooks or notebooks_dir()).resolve()
    if not (shipped / WORKBENCH).is_file():
        raise FileNotFoundError(f"{shipped / WORKBENCH} is missing")
    packaged = notebooks is None and shipped.parent.name == "comfyvn"  # inside the installed package
    copy_from = shipped if packaged and mode == "lab" else None
    nb = ws.root / "notebooks" if copy_from else shipped
    module = {"lab": "jupyterlab", "voila": "voila"}[mode]
    if importlib.util.find_spec(module) is None:
        raise RuntimeError(f"{module} is not installed in {sys.prefix}; install comfyvn-workbench with its "
                           "dependencies")
    token = token or os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    port = free_port(port)
    if mode == "lab":
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                   f"--ServerApp.root_dir={nb}", f"--IdentityProvider.token={token}",
                   f"--LabApp.default_url=/lab/tree/{WORKBENCH}",
                   # notebook_shim (classic-notebook config names, unused here) reads every ServerApp
                   # trait at start, which prints the ServerApp.token deprecation whenever voila
                   # (imported first) has turned traitlets' deprecation warnings on
                   "--ServerApp.jpserver_extensions=notebook_shim=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
    else:
        command = [sys.executable, "-m", "voila", str(nb / WORKBENCH), "--no-browser", "--Voila.ip=127.0.0.1",
                   f"--port={port}", f"--token={token}"]
    # the kernels run in the notebooks' folder: they get the workspace as an absolute path
    env = dict(os.environ, COMFYVN_HOME=str(ws.root), JUPYTER_TOKEN=token)
    return Launch(mode, ws, nb, port, token, command, env, copy_from)


def wait_until_answering(launch: Launch, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> bool:
    """True once the server answers HTTP (any status below 500); False when it exits or times out."""
    request = urllib.request.Request(launch.base + "api/status",
                                     headers={"Authorization": f"token {launch.token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(request, timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


def banner(launch: Launch) -> str:
    name = "JupyterLab" if launch.mode == "lab" else "Voila"
    lines = [f"  comfyvn workbench ({name}) on workspace {launch.ws.root}", f"  open: {launch.url}"]
    if launch.mode == "lab":
        lines += ["    then Run > Run All Cells to start the dashboards, or see them without code at",
                  f"    {launch.base}voila/render/{WORKBENCH}?token={launch.token}"]
    if sys.prefix != sys.base_prefix:
        lines.append(f"  in another shell: source {Path(sys.prefix) / 'bin' / 'activate'}")
    if launch.mode == "lab":  # a standalone Voila serves no HTTP API
        base = launch.base.rstrip("/")
        lines.append(f"  for the HTTP API and the tools: export JUPYTER_TOKEN={launch.token} BASE={base} "
                     f'AUTH="Authorization: token {launch.token}"')
    return "\n" + "\n".join(lines) + "\n"


def copy_missing_notebooks(src: Path, dest: Path) -> None:
    """Copy the shipped notebooks the workspace does not have yet (a user's edits are kept)."""
    for path in sorted(src.rglob("*.ipynb")):
        target = dest / path.relative_to(src)
        if ".ipynb_checkpoints" in path.parts or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())


def run(launch: Launch) -> int:
    """Start the server, print the URL once it answers, and wait for it (Ctrl-C goes to the server)."""
    if launch.copy_from is not None:
        copy_missing_notebooks(launch.copy_from, launch.notebooks)
    proc = subprocess.Popen(launch.command, env=launch.env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        if wait_until_answering(launch, proc):
            print(banner(launch), flush=True)
        elif proc.poll() is None:
            print(f"comfyvn-workbench: the server did not answer on {launch.base} within {START_TIMEOUT:.0f} s",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the terminal sent it to the server too, which decides (Lab asks first)
            continue


def _select_workspace(args: argparse.Namespace) -> tuple[Workspace, str | None]:
    """The workspace to open and, when it has to be made, what will make it (``init``/``demo``)."""
    default = "demo-workspace" if args.cmd == "demo" else None
    ws = workspace(args.workspace or (os.environ.get("COMFYVN_HOME") if default is None else None) or default)
    if args.cmd == "demo":
        return ws, "demo"
    if is_workspace(ws):
        return ws, None
    if args.init:
        return ws, "init"
    raise NotAWorkspaceError(
        f"{ws.root} is not a comfyvn workspace (no config/comfyvn.json); pass --workspace DIR, set COMFYVN_HOME, "
        "add --init to create an empty workspace there, or run 'comfyvn-workbench demo' for a demo workspace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfyvn-workbench", description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: the server's, or 2 for bad usage / not a workspace.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    helps = {"lab": "JupyterLab on the shipped notebooks, the workbench open", "voila": "the workbench in Voila",
             "demo": "seed a demo workspace (idempotent) and open it"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--workspace", help="workspace folder (default: " + (
            "./demo-workspace)" if name == "demo" else "$COMFYVN_HOME, else the current folder)"))
        p.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (a free one if taken)")
        p.add_argument("--dry-run", action="store_true", help="check and print the command; start and create nothing")
        p.add_argument("--notebooks", type=Path, help="notebooks folder (default: the shipped notebooks)")
        if name == "demo":
            p.add_argument("--voila", action="store_true", help="serve it with Voila instead of JupyterLab")
        else:
            p.add_argument("--init", action="store_true", help="create an empty workspace if the folder is not one")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = ("voila" if args.voila else "lab") if args.cmd == "demo" else args.cmd
    try:
        ws, make = _select_workspace(args)
        launch = plan(mode, ws, port=args.port, notebooks=args.notebooks)
    except (NotAWorkspaceError, FileNotFoundError, RuntimeError) as exc:
        print(f"comfyvn-workbench: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        todo = {"init": "create an empty workspace", "demo": "seed the demo workspace (if not yet seeded)"}
        print(f"workspace: {ws.root}" + (f" (would {todo[make]} there)" if make else ""))
        print(f"notebooks: {launch.notebooks}" + (f" (copies of {launch.copy_from})" if launch.copy_from else ""))
        print(f"COMFYVN_HOME={ws.root} " + " ".join(launch.command))
        print(f"url: {launch.url}")
        return 0
    if make == "demo":
        seed(ws.root)
    elif make == "init":
        open_existing_workspace(ws.root, create=True)
    return run(launch)


def demo_main(argv: list[str] | None = None) -> int:
    """``comfyvn-demo seed|lab``: seed the demo workspace, or seed it and open JupyterLab on it."""
    parser = argparse.ArgumentParser(prog="comfyvn-demo", description="The demo workspace: sample art, sounds, "
                                     "queued files and two findings for the sidecar enforcer.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_seed = sub.add_parser("seed", help="create the demo workspace (idempotent)")
    p_seed.add_argument("--workspace", default=os.environ.get("COMFYVN_HOME") or "demo-workspace")
    p_lab = sub.add_parser("lab", help="seed it if needed and start JupyterLab on it (= comfyvn-workbench demo)")
    p_lab.add_argument("--workspace", default=os.environ.get("COMFYVN_HOME") or "demo-workspace")
    p_lab.add_argument("--notebooks", default=None, help="notebooks folder (default: the shipped notebooks)")
    p_lab.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    if args.cmd == "seed":
        seed(Path(args.workspace))
        return 0
    extra = ["--notebooks", args.notebooks] if args.notebooks else []
    return main(["demo", "--workspace", args.workspace, "--port", str(args.port), *extra])


if __name__ == "__main__":
    raise SystemExit(main())
