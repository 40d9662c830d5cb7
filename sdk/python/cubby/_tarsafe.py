"""Extracting a tar that came from a box, without trusting it.

The names in the archive are the box's: Debian's Python 3.11.2 has no
``tarfile`` extraction filters, so this is cubby's own, with the rules of
``cubby cp`` on the host side: no absolute names and no ``..``, nothing
written through a symlink (every parent directory is opened with
O_NOFOLLOW, one component at a time, from the destination), only
directories, regular files, symlinks and hardlinks to members already
extracted; no devices or fifos; setuid/setgid bits dropped; files replaced,
never written through.
"""
from __future__ import annotations

import os
import stat
import tarfile
from typing import IO, List

from .errors import BadRequest


def _components(name: str) -> List[str]:
    if name.startswith("/"):
        raise BadRequest(f"the box sent an absolute path: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadRequest(f"the box sent a path with '..': {name!r}")
    return parts


def _open_parent(root_fd: int, parts: List[str]) -> int:
    """A directory fd for parts[:-1] beneath root_fd, made as needed; never
    follows a symlink."""
    fd = os.dup(root_fd)
    try:
        for p in parts[:-1]:
            try:
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(p, 0o755, dir_fd=fd)
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                raise BadRequest(f"cannot extract beneath {p!r}: {e.strerror} (a symlink or a file)") from e
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_existing(dir_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"cannot replace the directory {name!r} with a file")
    os.unlink(name, dir_fd=dir_fd)


def extract_tar(fileobj: IO[bytes], dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for m in tar:
                parts = _components(m.name)
                if not parts:
                    continue
                dfd = _open_parent(root_fd, parts)
                leaf = parts[-1]
                mode = m.mode & 0o1777  # no setuid/setgid
                try:
                    if m.isdir():
                        try:
                            os.mkdir(leaf, mode | 0o700, dir_fd=dfd)
                        except FileExistsError:
                            st = os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
                            if not stat.S_ISDIR(st.st_mode):
                                raise BadRequest(f"{m.name!r} exists and is not a directory")
                    elif m.isreg():
                        _remove_existing(dfd, leaf)
                        src = tar.extractfile(m)
                        assert src is not None
                        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     mode, dir_fd=dfd)
                        with os.fdopen(fd, "wb") as out:
                            while True:
                                chunk = src.read(1 << 20)
                                if not chunk:
                                    break
                                out.write(chunk)
                        os.utime(leaf, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
                    elif m.issym():
                        _remove_existing(dfd, leaf)
                        os.symlink(m.linkname, leaf, dir_fd=dfd)
                    elif m.islnk():
                        target = _components(m.linkname)
                        tfd = _open_parent(root_fd, target)
                        try:
                            st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
                            if not stat.S_ISREG(st.st_mode):
                                raise BadRequest(f"hardlink {m.name!r} to something that is not a file")
                            _remove_existing(dfd, leaf)
                            os.link(target[-1], leaf, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
                        finally:
                            os.close(tfd)
                    else:
                        raise BadRequest(f"{m.name!r}: the box sent a device or fifo; not extracted")
                finally:
                    os.close(dfd)
    except tarfile.TarError as e:
        raise BadRequest(f"the archive from the box is not a valid tar: {e}") from e
    finally:
        os.close(root_fd)
