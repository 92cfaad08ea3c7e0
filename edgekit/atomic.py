"""Write artifacts so that a crash, a kill or a second writer never leaves a wrong file behind.

- Every artifact goes to a temporary name in the destination's folder and is renamed into place
  only when complete (rename is atomic on one filesystem). An existing file is replaced only when
  the user said ``--force``; without it the final step is a hard link, which fails if another
  process created the file meanwhile, so nothing is overwritten by surprise.
- Temporary files and work folders carry the writing process's pid in their name
  (``.NAME.PID.XXXX.part`` / ``.tmp``). A process killed with SIGKILL cannot clean up, so the next
  edgekit command that writes into that folder removes what dead processes left (:func:`sweep`);
  a live process's files are never touched.
- While a command works towards an output, it holds an exclusive ``flock`` on ``.NAME.lock``
  beside it: a second command writing the same path is refused at once. The kernel drops the
  lock when its holder dies, so a killed writer's lock is simply taken over.
- An output that is one of the command's inputs is refused (:func:`check_can_write` ``inputs``).
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from edgekit.errors import EdgekitError
from edgekit.worker import announce_folder

_TAGGED = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?:part|tmp)$")
_LOCK_SUFFIX = ".lock"
_held: dict[str, int] = {}  # lock path -> fd of the flock this process holds


def check_can_write(
    path: str | os.PathLike[str], force: bool, inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Path:
    """Fail early, before any work: ``path`` is an input, exists without ``force``, or another
    process is writing it. On success this process holds the path's write lock until it is written."""
    check_not_input(path, inputs)
    target = _check_target(path, force)
    if target.parent.is_dir():  # a folder that does not exist yet is made (and locked) when writing
        sweep(target.parent)
        claim(target, wait=False)
    return target


def check_not_input(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse to write over a command's own input (``-o model.onnx --force`` on ``model.onnx``),
    whatever the spelling: symlinks and hard links are compared as files, not names."""
    out = Path(output)
    for item in inputs:
        if not item:
            continue
        source = Path(item)
        if not source.is_file():
            continue
        same = out.exists() and os.path.samefile(out, source)
        if same or out.resolve() == source.resolve():
            raise EdgekitError(f"{output}: is the input {item}; write the output to another path")


# What the filesystem, not edgekit, refuses: a read-only mount, no permission, a full disk or quota.
_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def _writable(target: Path) -> Iterator[None]:
    """Turn the filesystem's refusal to write ``target`` into one line naming it (the permission
    check before the work cannot see a read-only mount, and root passes it anyway)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _UNWRITABLE:
            raise
        raise EdgekitError(f"{target}: cannot be written there ({exc.strerror or exc})") from exc


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}{_LOCK_SUFFIX}"


def claim(target: str | os.PathLike[str], wait: bool = False) -> None:
    """Hold the exclusive write lock of ``target`` (``.NAME.lock``, flock) until :func:`release`.

    Held already by this process: nothing to do. Held by another live process: refused, or with
    ``wait`` (library writers that were told to overwrite) waited for."""
    lock = _lock_path(Path(target).absolute())
    key = str(lock)
    if key in _held:
        return
    with _writable(Path(target)):
        lock.parent.mkdir(parents=True, exist_ok=True)
    announce_folder(lock.parent)  # swept by the supervisor if this process crashes
    while True:
        with _writable(Path(target)):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EdgekitError(f"{target}: being written by another edgekit process (pid {holder}); "
                               "wait for it or choose another output") from None
        try:  # a holder that finished unlinks the file: a lock on that old inode locks nothing
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = -1
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd


def release(target: str | os.PathLike[str]) -> None:
    """Drop ``target``'s write lock, removing the lock file while still holding it."""
    lock = _lock_path(Path(target).absolute())
    fd = _held.pop(str(lock), None)
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    os.close(fd)


@atexit.register
def release_all() -> None:
    """Drop every lock this process holds: a command that ends (in any way) writes nothing more."""
    for key in list(_held):
        release(Path(key).parent / Path(key).name[1 : -len(_LOCK_SUFFIX)])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, killed but not yet reaped, counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def sweep(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what dead edgekit processes left in ``folder``: pid-tagged ``.part`` files and
    ``.tmp`` work folders, and unheld ``.lock`` files. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TAGGED.match(entry.name)
        if match and not pid_alive(int(match["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
        elif entry.name.startswith(".") and entry.name.endswith(_LOCK_SUFFIX) and str(entry.absolute()) not in _held:
            if _remove_unheld_lock(entry):
                removed.append(entry)
    return removed


def _remove_unheld_lock(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # a live writer holds it
    try:
        if os.stat(lock).st_ino == os.fstat(fd).st_ino:
            os.unlink(lock)
            return True
        return False
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def _tagged_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _claim_with_temp(target: Path) -> Path:
    """Make the folder, sweep what dead writers left there, hold ``target``'s lock and create the
    pid-tagged temporary file; the lock is released again if the temporary cannot be made."""
    with _writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent)
    claim(target, wait=True)
    try:
        with _writable(target):
            fd, name = tempfile.mkstemp(prefix=_tagged_prefix(target), suffix=".part", dir=target.parent)
    except BaseException:
        release(target)
        raise
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds."""
    target = _check_target(path, force)
    tmp = _claim_with_temp(target)
    try:
        with _writable(target):  # a disk that fills up while the artifact is written
            yield tmp
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise EdgekitError(f"{target}: nothing was written")
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
            _commit(tmp, target, force)
    finally:
        if tmp.exists():
            tmp.unlink()
        release(target)


def _check_target(path: str | os.PathLike[str], force: bool) -> Path:
    target = Path(path)
    if target.exists() and not force:
        raise EdgekitError(f"{target}: already exists (use --force to overwrite)")
    if target.is_dir():
        raise EdgekitError(f"{target}: is a directory, expected a file path")
    return target


def _commit(tmp: Path, target: Path, force: bool) -> None:
    """Rename into place; without ``force`` never over a file that appeared meanwhile."""
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if target exists: no silent overwrite
    except FileExistsError:
        raise EdgekitError(f"{target}: already exists (written by another process meanwhile)") from None
    except OSError:  # a filesystem without hard links: the lock already excludes other edgekit writers
        if target.exists():
            raise EdgekitError(f"{target}: already exists (written by another process meanwhile)") from None
        os.replace(tmp, target)
    else:
        tmp.unlink()


@contextlib.contextmanager
def work_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A private scratch folder beside ``target`` (``.NAME.PID.XXXX.tmp``), removed afterwards,
    and by the next writer in that folder if this process is killed. Python's and child
    processes' temporary files (``tempfile``, ``TMPDIR``) go inside it meanwhile, so a kill
    leaves nothing elsewhere either."""
    target = Path(target).absolute()  # TMPDIR must still point here after a library changes directory
    with _writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep(target.parent)
        work = Path(tempfile.mkdtemp(prefix=_tagged_prefix(target), suffix=".tmp", dir=target.parent))
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(work)
    os.environ["TMPDIR"] = str(work)
    try:
        yield work
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(work, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), force)
