"""Writing files safely and finding the cache folder.

Every output genoformer writes goes through :func:`atomic_write`: a temporary file in the
destination's folder, renamed into place only when complete, so an interrupted run never
leaves a truncated GFF3, index or model file behind. Only regular files are replaced that way:
a symbolic link's target is written (the link stays); a device, pipe or open descriptor
(``/dev/stdout``) is written straight through; ``-`` is standard output.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import IO, Iterator

# The output path meaning standard output (``--json -``).
STDOUT = "-"
_FD_PATH = re.compile(r"/(?:dev|proc/self)/fd/([0-9]+)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # temporary_sibling's names


def cache_root() -> Path:
    """Where the cache folder is: ``$GENOFORMER_CACHE`` or ``~/.cache/genoformer`` (not created)."""
    return Path(os.environ.get("GENOFORMER_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "genoformer")


def cache_dir() -> Path:
    """Folder for derived files (indexes, BGZF copies), created if missing (see :func:`cache_root`)."""
    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def temporary_sibling(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """Create a new hidden ``.NAME.<random>.tmp`` file (or folder) beside ``path`` and return it.

    Created with mode 0666 (0777 for a folder) less the umask, the permissions a plain ``open`` or
    ``mkdir`` gives, so results renamed into place are as readable as any other file (mkstemp's 0600
    would hide them from the rest of a group). Hidden, so an interrupted run leaves no file that
    looks like a result; a rerun picks a new name and never reads it.
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Let an OSError name the user's ``path``: a failed write (a full disk) names no file, a failed
    temporary file names a hidden sibling (of ``path`` or its link target) the user never asked for.
    Other errors without a file name, from the caller's code inside the block, are left alone."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            if exc.errno in _DISK_FULL:
                exc.filename = str(path)
        elif _TEMPORARY.fullmatch(name := Path(os.fsdecode(exc.filename)).name) and name[1:].startswith(
                (path.name + ".", Path(os.path.realpath(path)).name + ".")):
            exc.filename = str(path)
        raise


def _descriptor(path: str | os.PathLike) -> int | None:
    """The open file descriptor ``path`` names, if any: 1 for ``-``; N for ``/dev/fd/N``,
    ``/proc/self/fd/N`` and links to them (``/dev/stdout``, ``/dev/stderr``). Opening such a file
    anew would truncate it, or start at another offset than the descriptor's: the output must go
    through the descriptor itself."""
    if str(path) == STDOUT:
        return 1
    path = Path(path)
    for _ in range(40):  # the kernel's own limit on nested links
        named = _FD_PATH.fullmatch(str(path.absolute()))
        if named:
            return int(named[1])
        if not path.is_symlink():
            return None
        path = path.parent / os.readlink(path)
    return None


def _destination(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where to write for ``path`` and whether atomically (temporary file then rename).

    A symbolic link is followed, so its target is replaced and the link kept; a device, pipe or
    socket (``/dev/full``, a FIFO) is written straight through, since renaming over it would
    replace the node with a regular file; a folder is refused.
    """
    path = Path(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file to write", str(path))
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        return target, stat.S_ISREG(target.stat().st_mode)
    except FileNotFoundError:
        return target, True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was. ``-`` is
    standard output; open descriptors (``/dev/stdout``), devices and pipes are written straight
    through (see :func:`_descriptor`, :func:`_destination`). A failed write (a full disk) raises
    OSError naming ``path``.
    """
    fd = _descriptor(path)
    if fd is not None:
        with _naming(Path(path)):
            stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
            if stream is None:  # a descriptor of its own, sharing the offset (a dup)
                with open(os.dup(fd), mode, **open_kwargs) as handle:
                    yield handle
                return
            stream = stream.buffer if "b" in mode else stream
            yield stream
            stream.flush()
        return
    with _naming(Path(path)):
        target, atomic = _destination(path)
    if not atomic:
        with _naming(Path(path)), open(target, mode, **open_kwargs) as handle:
            yield handle
        return
    with _replacing(path, target) as tmp, _naming(Path(path)), open(tmp, mode, **open_kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _replacing(path: str | os.PathLike, target: Path) -> Iterator[Path]:
    """A temporary sibling of ``target`` that replaces it when the block ends, and is removed if the
    block fails; OSErrors name ``path``, the name the user gave."""
    with _naming(Path(path)):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(target)
    try:
        yield tmp
        with _naming(Path(path)):
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for writers that take a file name (pyBigWig, safetensors);
    for a device or pipe, the path itself (written straight through)."""
    with _naming(Path(path)):
        target, atomic = _destination(path)
    if not atomic or _descriptor(path) is not None:
        with _naming(Path(path)):
            yield Path(path)
        return
    with _replacing(path, target) as tmp, _naming(Path(path)):
        yield tmp


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, and removed at the end) while writing ``what``;
    a second holder is refused with an OutputLockedError. The lock is the kernel's (flock), so a killed
    run's leftover file locks nothing: the next run takes it over."""
    import fcntl

    from .errors import OutputLockedError

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"{path}: another run is writing {what}; wait for it to finish or choose "
                                    "another output") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder finished and removed the file between our open and lock: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still held, so no later run can lock the removed file
        os.close(fd)
