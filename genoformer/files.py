"""Writing files safely and finding the cache folder.

Every output genoformer writes goes through :func:`atomic_write`: a temporary file in the
destination's folder, renamed into place only when complete, so an interrupted run never
leaves a truncated GFF3, index or model file behind.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator


def cache_dir() -> Path:
    """Folder for derived files (indexes, BGZF copies): ``$GENOFORMER_CACHE`` or ``~/.cache/genoformer``."""
    root = os.environ.get("GENOFORMER_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "genoformer"
    path = Path(root)
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
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for writers that take a file name (pyBigWig, safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
