"""Finding (and if need be starting) the local server of a cubby home.

A local client talks to ``HOME/cubby.sock``. If nothing answers there, the
client starts ``cubby --home HOME serve --idle-exit N`` itself, so a first
script needs no manual step, and the server it started exits on its own
after N idle seconds, so nothing lingers. Readiness is an event, not a
guess: the server prints one line on stdout once it is listening (or once
it found another server already answering), and EOF on that pipe means it
failed, with the reason on its stderr.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Optional

from .errors import ConnectionFailed, Unavailable

DEFAULT_IDLE_EXIT = 60  # seconds an auto-started server waits for the next client


def default_home() -> str:
    """The home the CLI uses: $CUBBY_HOME, else /var/lib/cubby for root,
    else ~/.local/share/cubby."""
    env = os.environ.get("CUBBY_HOME")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/cubby"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "cubby")


def cubby_binary() -> str:
    """$CUBBY_BIN, else `cubby` on PATH."""
    env = os.environ.get("CUBBY_BIN")
    if env:
        return env
    found = shutil.which("cubby")
    if not found:
        raise Unavailable("no cubby server is running and no `cubby` binary was found to start one "
                          "(put it on PATH or set CUBBY_BIN)")
    return found


def answers(sock_path: str) -> bool:
    """Whether something accepts connections on the Unix socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(sock_path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def ensure_server(home: str, sock_path: str, idle_exit: int = DEFAULT_IDLE_EXIT,
                  binary: Optional[str] = None) -> None:
    """Starts a server for `home` unless one answers on `sock_path`; returns
    once one does."""
    if answers(sock_path):
        return
    argv = [binary or cubby_binary(), "--home", home, "serve", "--socket", sock_path,
            "--idle-exit", str(idle_exit)]
    os.makedirs(home, mode=0o700, exist_ok=True)
    log_path = os.path.join(home, "serve.log")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    start_at = os.lseek(log_fd, 0, os.SEEK_END)
    # `sh -c '"$@" &'`: the shell starts the server in the background and
    # exits at once, so the server is never this process's child (no zombie
    # of ours when it idles out) and lives in its own session (the terminal's
    # Ctrl-C meant for the script does not reach it). Its stdout is our pipe
    # until it prints the readiness line; its stderr goes to HOME/serve.log.
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", '"$@" &', "sh", *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=log_fd, start_new_session=True,
                                close_fds=True)
    finally:
        os.close(log_fd)
    assert proc.stdout is not None
    proc.wait()
    line = proc.stdout.readline()  # EOF once the server exits without it
    proc.stdout.close()
    if not line.startswith(b"cubby serve: listening"):
        with open(log_path, "rb") as f:
            f.seek(start_at)
            err = f.read().decode(errors="replace").strip()
        raise ConnectionFailed(f"could not start `{' '.join(argv)}`: {err or 'it exited without a word'}")
