"""Files diffews reads and writes: atomic writes (files and folders), output folders, input paths.

Every file or folder diffews writes is first written under a temporary name beside its target
(``.<name>.<host>-<pid>-<random>.tmp``) and renamed into place once complete, so nobody sees half of
it and an interrupted write leaves no partial file. A `Transaction` keeps each file it replaces
(renamed aside to ``.<name>.<host>-<pid>-<random>.orig``) until `commit`, so `rollback` restores
exactly the earlier state: a failed or interrupted run never deletes or changes a file it did not
create. A process killed outright (SIGKILL, power loss) cannot roll back; the next transaction that
writes into the same folder on the same machine finds what that dead process left there
(`recover_interrupted`): the originals it had replaced go back in place, its temporary files are
deleted, the files it created stay. What is written gets the ordinary modes filtered by the umask
(files 0666 & ~umask, folders 0777 & ~umask), whatever the library that wrote it chose (safetensors,
for one, writes 0600).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from PIL import Image, PngImagePlugin
from safetensors import SafetensorError

from .distributed import Processes
from .errors import InputError, WriteError, first_line
from .paths import user_path
from .processing.images import IMAGE_READ_ERRORS, IMAGE_SUFFIXES
from .signals import deferred, raise_if_stop_requested

logger = logging.getLogger("diffews")

STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Write errors of the storage, not of the program (full disk, quota, file too large, read-only file
system): reported in one line like bad input, once the run has undone its partial outputs."""

NAME_MAX = 255
"""Longest file name, in bytes, that Linux file systems (ext4, XFS, btrfs) accept."""
TEMP_SUFFIX = ".tmp"
BACKUP_SUFFIX = ".orig"
MAX_PENDING_WRITES = 32
"""Writes queued on an `OutputFolder`'s writer thread before `save_image_later` waits (bounds the memory of queued images)."""
SOFTWARE = "diffews"
"""The ``Software`` text chunk of every PNG an `OutputFolder` writes: how a later run tells its own outputs."""


def temporary_path(target: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """An unused name beside `target`, ``.<name>.<host>-<pid>-<random><suffix>``, for staging it or
    (with `BACKUP_SUFFIX`) for keeping the original it replaces; nothing is created. The host and
    process in the name let `recover_interrupted` tell a dead writer's leftovers from a live one's."""
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _host_tag() -> str:
    """Six hex digits naming this machine and process-id namespace: two containers that share a
    host name (and a folder) but not their process ids never take each other's files for a dead one's."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha1(f"{socket.gethostname()}:{namespace}".encode()).hexdigest()[:6]


_HOST = _host_tag()
COMMITTING_SUFFIX = ".done"
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<owner>[0-9a-f]{6}-\d+)-[0-9a-f]{8}(?P<suffix>\.tmp|\.orig|\.done)")


def recover_interrupted(folder: Path) -> list[Path]:
    """Undo what writers killed outright left in `folder`; returns the targets restored.

    Only leftovers of processes of this host (and process-id namespace) that no longer run are
    touched. A staged temporary (``.tmp``) is deleted. A kept original (``.orig``) goes back in place
    of what the dead process wrote there — unless that process had begun to commit (its ``.done``
    marker is there: the originals are then deleted, as the commit would have), or the file in place
    changed after the dead process wrote it (then both stay, and a warning names them). Files the
    dead process created without replacing anything stay. Safe against several processes
    recovering the same folder at once: each leftover is claimed by one rename.
    """
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    found_names = [(entry, found) for entry in entries if (found := _LEFTOVER.fullmatch(entry.name))]
    dead = {owner for owner in {found["owner"] for _, found in found_names} if _is_dead(owner)}
    leftovers = [(entry, found["name"], found["suffix"], found["owner"]) for entry, found in found_names if found["owner"] in dead]
    committing = {owner for _, _, suffix, owner in leftovers if suffix == COMMITTING_SUFFIX}
    restored = []
    for entry, name, suffix, owner in leftovers:
        try:
            if suffix == TEMP_SUFFIX or (suffix == BACKUP_SUFFIX and owner in committing):
                remove(entry)
            elif suffix == BACKUP_SUFFIX and _restore(entry, entry.with_name(name)):
                restored.append(entry.with_name(name))
        except OSError as error:
            logger.warning("%s: left by an interrupted run, could not be cleaned up (%s)", entry, error.strerror or error)
    for entry, _, suffix, _ in leftovers:
        if suffix == COMMITTING_SUFFIX:
            entry.unlink(missing_ok=True)
    if restored:
        logger.warning("restored %d file(s) that an interrupted run had replaced: %s",
                       len(restored), ", ".join(str(p) for p in restored))
    return restored


def _restore(backup: Path, target: Path) -> bool:
    """Put `backup` (an original a dead process renamed aside) back at `target`; False if another
    process got there first or `target` changed since the dead process wrote it."""
    try:
        renamed_aside = backup.stat().st_ctime_ns
    except FileNotFoundError:
        return False
    if _exists(target) and target.lstat().st_mtime_ns > renamed_aside:
        logger.warning("%s: changed after an interrupted run wrote it; kept, and its earlier version stays at %s", target, backup)
        return False
    claimed = temporary_path(target, BACKUP_SUFFIX)  # ours now: a process killed right here leaves it to the next recovery
    try:
        os.rename(backup, claimed)
    except FileNotFoundError:
        return False
    remove(target)
    os.rename(claimed, target)
    return True


def _is_dead(owner: str) -> bool:
    """Whether the writer `owner` (``<host>-<pid>``) is a process of this host that no longer runs."""
    host, pid = owner.split("-")
    if host != _HOST or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False  # someone else's process, or no valid pid: not ours to judge
    return False


def remove(path: Path) -> None:
    """Remove a file or a folder tree, if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class TreeSnapshot:
    """What a folder held when taken, to undo a run that writes there through other libraries (an
    experiment tracker's event files): `remove_new` removes every file and folder that appeared
    since, and the folder itself and its parents if they did not exist, never anything older."""

    def __init__(self, root: str | Path) -> None:
        self.root = user_path(root)
        self._missing = missing_folders(self.root)
        self._paths = set(self.root.rglob("*")) if self.root.is_dir() else set()

    def remove_new(self) -> None:
        """Remove the files, then the folders (deepest first, only while empty), that are new."""
        new = set(self.root.rglob("*")) - self._paths if self.root.is_dir() else set()
        for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        remove_created_folders(self._missing)


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, deepest first: what creating it will create
    (for `remove_created_folders` to undo)."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


def check_parent_folders(path: Path) -> None:
    """`InputError` when the nearest existing parent of `path` is not a folder (a file stands where a
    folder to create `path` in would go): found before a long run, not when it writes."""
    existing = next((folder for folder in path.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{existing}: is a file, not a folder; cannot write {path} inside it")


def check_writable(folder: Path, advice: str) -> None:
    """`InputError` unless a file can be created in `folder`, or, while it does not exist, in the nearest
    existing folder it would be created in; creates nothing. `advice` ends the message."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is None:  # a relative path whose working folder was deleted
        raise InputError(f"{folder}: no existing folder to write in; {advice}")
    if not existing.is_dir():
        raise InputError(f"{existing}: is a file, not a folder; {advice}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"{existing}: cannot write there ({error.strerror or error}); {advice}") from None


def refuse_link(target: Path) -> None:
    """`InputError` if the output folder `target` is a symbolic link: outputs are written beside it and
    moved into its place, which would replace the link, not fill the folder it points to."""
    if target.is_symlink():
        raise InputError(f"{target}: is a symbolic link; give the folder it points to ({os.path.realpath(target)})")


def require_new_folder(path: Path, advice: str) -> None:
    """`InputError` unless `path` can become a new folder: missing (not under a file) or an empty folder,
    not a symbolic link; `advice` ends the message."""
    check_parent_folders(path)
    refuse_link(path)
    if path.exists() and not is_empty_folder(path):
        raise InputError(f"{path}: already exists and is not an empty folder; {advice}")


def remove_created_folders(folders: Iterable[Path]) -> None:
    """Remove folders a run created, deepest first, each only while empty (stops at the first that
    is not: it holds something the run did not write, or another process filled it again)."""
    for folder in folders:
        if not folder.exists():  # removed already (by another process of the run): its parent may still be ours
            continue
        if not folder.is_dir() or any(folder.iterdir()):
            break
        with contextlib.suppress(OSError):
            folder.rmdir()


class Transaction:
    """Files and folders written under temporary names, put in place one by one, kept or undone together.

    ``with transaction.write(target) as staged:`` hands out a temporary path beside `target` (a
    file by that name is for the caller to create; with ``folder=True`` it is an empty folder);
    when the block succeeds, the staged path is renamed to `target`. A `target` that existed
    before the transaction is renamed aside first and kept until `commit` (which deletes it) or
    `rollback` (which puts it back). Safe to use from several threads.
    """

    def __init__(self) -> None:
        self._originals: dict[Path, Path | None] = {}
        self._recovered: set[Path] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def write(self, target: str | Path, folder: bool = False, sync: bool = False) -> Iterator[Path]:
        """Stage `target`; `sync` flushes the staged file or tree to disk before the rename."""
        target = Path(target)
        self._recover(target.parent)
        staged = temporary_path(target)
        if folder:
            staged.mkdir()
        try:
            yield staged
            _apply_umask(staged)
            if sync:
                _fsync_tree(staged)
            self._put_in_place(staged, target)
        except BaseException as error:
            remove(staged)
            if isinstance(error, OSError) and error.errno in STORAGE_ERRORS and error.filename in (None, str(staged)):
                error.filename = str(target)  # PIL and json write through file objects: name the output, not the temporary
            raise
        if sync:
            _fsync(target.parent)

    def _recover(self, folder: Path) -> None:
        """`recover_interrupted(folder)`, once per folder and transaction."""
        with self._lock:
            if folder in self._recovered:
                return
            self._recovered.add(folder)
            recover_interrupted(folder)

    def _put_in_place(self, staged: Path, target: Path) -> None:
        with self._lock:
            if target in self._originals:  # written earlier in this transaction: ours to replace
                if target.is_dir():
                    shutil.rmtree(target)
            else:
                # Recorded before the rename, so an interrupt between the two still rolls back right.
                backup = self._originals[target] = temporary_path(target, BACKUP_SUFFIX) if _exists(target) else None
                if backup is not None:
                    os.rename(target, backup)
            os.replace(staged, target)

    @property
    def written(self) -> list[Path]:
        """The targets written so far, in order."""
        return list(self._originals)

    def commit(self) -> None:
        """Make the writes final: delete the originals they replaced.

        A marker in each folder of those originals says the commit has begun, so a process killed
        while deleting them is finished by `recover_interrupted`, not half undone."""
        with self._lock:
            backups = [backup for backup in self._originals.values() if backup is not None]
            markers = [temporary_path(folder / "diffews-commit", COMMITTING_SUFFIX) for folder in dict.fromkeys(b.parent for b in backups)]
            for marker in markers:
                marker.touch()
            for backup in backups:
                remove(backup)
            for marker in markers:
                marker.unlink(missing_ok=True)
            self._originals.clear()

    def rollback(self) -> None:
        """Undo the writes: remove what they created, put back every original they replaced (Ctrl-C and
        termination signals wait until it is done)."""
        with self._lock, deferred():
            for target, backup in reversed(self._originals.items()):
                if backup is None:
                    remove(target)
                elif _exists(backup):
                    remove(target)
                    os.rename(backup, target)
            self._originals.clear()


@contextlib.contextmanager
def atomic_write(target: str | Path, folder: bool = False, sync: bool = False) -> Iterator[Path]:
    """Write `target` (a file, or a folder with ``folder=True``) all at once or not at all.

    Yields a temporary path beside `target` to write; when the block succeeds it replaces
    `target` (an earlier file or folder of that name is deleted only then); on any exception,
    interrupts included, it is removed and `target` is untouched.

    >>> with atomic_write("report.json") as path:
    ...     path.write_text(text)
    """
    transaction = Transaction()
    try:
        with transaction.write(target, folder, sync) as staged:
            yield staged
        raise_if_stop_requested()
    except BaseException:
        transaction.rollback()
        raise
    transaction.commit()


@contextlib.contextmanager
def new_folder(target: str | Path) -> Iterator[Path]:
    """Write a folder that does not exist yet, all at once or not at all (see `atomic_write`).

    An empty folder the user made is kept (its permissions, group, mount) and filled: the contents
    are staged inside it and moved into it when the block succeeds, sub-folders first and the JSON
    files that describe the folder last (so a reader that looks for them never finds it half
    filled); on failure it is left empty. Write errors of the storage (`STORAGE_ERRORS`) are
    reported for `target`.

    Missing parent folders are created, and removed again if the block fails.

    Raises:
        InputError: `target` exists and is not an empty folder, or is a symbolic link (nothing of it
            is touched), the folder to write in is not writable, or the disk is full.
    """
    target = Path(target)
    check_new_folder(target)
    try:
        with _creating_parents(target), _staging(target) as staged:
            yield staged
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        raise InputError(f"{target}: cannot write ({error.strerror})") from None


@contextlib.contextmanager
def _creating_parents(target: Path) -> Iterator[None]:
    """Create `target`'s missing parent folders; remove them again if the block fails, interrupts included."""
    created = missing_folders(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        remove_created_folders(created)
        raise


def check_new_folder(target: Path) -> None:
    """The checks of `new_folder`, made before long work so that a bad output folder is refused first:
    `InputError` unless `target` is missing or an empty folder, not a symbolic link, and can be written
    (in the nearest existing folder while it is missing). Creates nothing."""
    require_new_folder(target, "choose a new output folder")
    check_writable(target, "choose another output folder")


def _staging(target: Path) -> contextlib.AbstractContextManager[Path]:
    """Where a new folder `target` is staged: inside it if it is an (empty) folder, else beside it."""
    return _fill_in_place(target) if target.is_dir() else atomic_write(target, folder=True)


def is_empty_folder(path: Path) -> bool:
    """Whether `path` is a folder with nothing in it once the leftovers of killed diffews runs are
    undone (`recover_interrupted`: a run killed while filling it leaves a hidden staging folder)."""
    if not path.is_dir():
        return False
    if not path.is_symlink():
        recover_interrupted(path)
    return not any(path.iterdir())


@contextlib.contextmanager
def _fill_in_place(target: Path) -> Iterator[Path]:
    """`new_folder` for an existing empty `target`: stage inside it, then move the entries in."""
    staged = temporary_path(target / "contents")
    staged.mkdir()
    moved: list[Path] = []
    try:
        yield staged
        raise_if_stop_requested()
        _apply_umask(staged)
        for entry in sorted(staged.iterdir(), key=lambda p: (not p.is_dir(), p.suffix == ".json", p.name)):
            destination = target / entry.name
            if _exists(destination):
                raise InputError(f"{destination}: appeared while this run wrote {target}; nothing was written")
            moved.append(destination)  # before the rename, so an interrupt between the two still undoes it
            os.rename(entry, destination)
        staged.rmdir()
    except BaseException:
        for path in moved:
            remove(path)
        remove(staged)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_write`); returns the path."""
    with atomic_write(path) as staged:
        staged.write_text(text)
    return Path(path)


WRITE_FAILURES = (OSError, SafetensorError, WriteError)
"""What a failed write raises: the OS's error, safetensors' own (its writer reports a full disk so), or a
`WriteError` (whose message names the staged file, not the one the user will look for)."""


def write_failure(error: BaseException) -> str:
    """Why a write failed (one of `WRITE_FAILURES`), without the path its message names."""
    return getattr(error, "detail", None) or getattr(error, "strerror", None) or first_line(error)


def replace_folder(target: Path, write: Callable[[Path], None], action: str, hint: str = "") -> Path:
    """Fill a temporary folder beside `target` with `write(folder)`, then put it in `target`'s place
    (`atomic_write`): readers see the old folder or the complete new one, never a half-written one.
    A missing or empty `target` is written by `new_folder` (an empty folder is kept and filled); a
    symbolic link is refused (`refuse_link`): putting a folder in its place would drop the link.

    Raises:
        InputError: ``"<target>: cannot <action> (<reason>)<hint>"`` when the folder cannot be
            written (full disk, permissions); the temporary folder is removed, `target` kept as it was,
            and the parent folders this call created are removed (on an interrupt too).
    """
    refuse_link(target)
    try:
        with _creating_parents(target):
            empty = not _exists(target) or is_empty_folder(target)
            if empty:  # written as `new_folder` writes it: a link to an empty folder is refused
                check_new_folder(target)
            with _staging(target) if empty else atomic_write(target, folder=True) as staged:
                write(staged)
    except WRITE_FAILURES as error:
        raise InputError(f"{target}: cannot {action} ({write_failure(error)}){hint}") from None
    return target


class OutputFolder:
    """A folder that receives a run's files, each written atomically; a failed run leaves it as it was.

    Inside ``with``, files land one by one (a reader never sees half a file); PNGs carry a ``Software``
    chunk naming diffews (see `check_replaceable`). If the block fails, interrupts included, the run is
    undone: files it created are removed, files it replaced are restored exactly, and the folder (and
    any parent folders) go too if this run created them. `save_image_later` moves
    rendering and PNG encoding onto one writer thread, off the caller's critical path; leaving the
    ``with`` waits for it, and a failed write fails the run.

    Several `processes` (`diffews.distributed`) may fill one folder, each with its own files: each
    keeps its writes until every process has written all of its files, and if any process fails,
    all of them undo theirs (the folder goes too if the run created it).
    """

    def __init__(self, path: str | Path, processes: Processes = Processes()) -> None:
        self.path = user_path(path)
        self._processes = processes
        self._files = Transaction()
        self._created: list[Path] = []  # folders this run created, deepest first
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    @property
    def written(self) -> list[Path]:
        """Files written by this run so far, in order."""
        return self._files.written

    def __enter__(self) -> OutputFolder:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: output folder is an existing file")
        self._processes.barrier()  # every process looks before one of them creates the folder
        self._created = missing_folders(self.path)
        self._processes.barrier()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except BaseException as error:  # __exit__ will not run: the folders made here go now
            remove_created_folders(self._created)
            if isinstance(error, OSError):
                raise InputError(f"{self.path}: cannot write to output folder ({error.strerror or error})") from None
            raise
        return self

    def write(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """Stage the file `name`: yields a temporary path to create, put in place when the block succeeds."""
        return self._files.write(self.path / name)

    def save_image(self, image: Image.Image, name: str) -> Path:
        """Save `image` as PNG under `name`, atomically."""
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", SOFTWARE)
        with self.write(name) as staged:
            image.save(staged, format="PNG", pnginfo=info)
        return self.path / name

    def save_image_later(self, render: Callable[[], Image.Image], name: str) -> None:
        """Render an image and save it under `name` on the writer thread (see `save_image`)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffews-writer")
        while len(self._pending) >= MAX_PENDING_WRITES:
            self._pending.pop(0).result()
        self._pending.append(self._writer.submit(lambda: self.save_image(render(), name)))

    def _finish_writes(self) -> None:
        """Wait for the writer thread; re-raise the first failed write."""
        if self._writer is None:
            return
        self._writer.shutdown(wait=True)
        self._writer = None
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if error is not None:
            self._undo()
            return
        try:
            self._finish_writes()
            raise_if_stop_requested()  # before the barrier: the other processes then undo their files too
            self._processes.barrier()  # PeerFailed if another process failed: then nobody keeps their files
        except BaseException:  # a failed write, a failed peer, or an interrupt while waiting
            self._undo()
            raise
        self._files.commit()

    def _undo(self) -> None:
        """Drop queued writes, wait for the one in progress, then roll the folder back; Ctrl-C and
        termination signals wait until it is done."""
        with deferred():
            if self._writer is not None:
                self._writer.shutdown(wait=True, cancel_futures=True)
                self._writer = None
            self._pending = []
            self._files.rollback()
            remove_created_folders(self._created)


def expand_image_paths(specs: Iterable[str]) -> list[Path]:
    """Files, folders (their image files, sorted; hidden ones skipped) and glob patterns -> image paths,
    in order, each file once (however it is named). A name that exists is taken as it is, even with
    ``[``, ``*`` or ``?`` in it; only one that does not is a pattern."""
    found: list[Path] = []
    for spec in specs:
        path = user_path(spec)
        if glob.has_magic(spec) and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise InputError(f"{spec}: pattern matched no image files")
        elif path.is_dir():
            files = sorted(  # hidden files (e.g. macOS '._name.jpg' metadata) skipped, as globs skip them
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not files:
                raise InputError(f"{path}: folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.is_file():
            files = [path]
        else:
            raise InputError(f"{path}: no such file or folder")
        found.extend(files)
    unique: dict[str, Path] = {}  # one file named twice (relative and absolute) is one query; links stay names of their own
    for path in found:
        unique.setdefault(os.path.abspath(path), path)
    return list(unique.values())


def check_replaceable(folder: str | Path, names: Iterable[str], inputs: Iterable[Path] = ()) -> None:
    """`InputError` unless every file `names` would put in `folder` is new or an output of an earlier
    diffews run (a PNG whose ``Software`` chunk says `SOFTWARE`, or a JSON file whose
    ``info.description`` starts with it), and none of them is one of the run's `inputs`: a run never
    replaces a file it did not create, and every name leaves room for its staging name (`NAME_MAX`)."""
    folder = user_path(folder)
    own_inputs = {path.resolve() for path in inputs}
    for name in names:
        path = folder / name
        staged = max(len(temporary_path(path, suffix).name.encode()) for suffix in (TEMP_SUFFIX, BACKUP_SUFFIX))
        if staged > NAME_MAX:
            raise InputError(
                f"{path}: name too long to write ({len(name.encode())} bytes, and it is staged under a name "
                f"{staged - len(name.encode())} bytes longer; file systems allow {NAME_MAX}); give the input a shorter name"
            )
        if path.resolve() in own_inputs:
            raise InputError(f"{path}: is an input of this run and would be replaced by an output; choose another --out")
        if path.exists() and not _written_by_diffews(path):
            raise InputError(f"{path}: already exists and was not written by diffews; choose another --out or move the file")


def _written_by_diffews(path: Path) -> bool:
    try:
        if path.suffix.lower() == ".json":
            return _json_by_diffews(json.loads(path.read_text()))
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == SOFTWARE
    except IMAGE_READ_ERRORS:
        return False


def _json_by_diffews(content: object) -> bool:
    """Whether a JSON file's content is a diffews output: ``{"info": {"description": "diffews ..."}}``."""
    info = content.get("info") if isinstance(content, dict) else None
    return isinstance(info, dict) and str(info.get("description", "")).startswith(SOFTWARE)


def output_stems(paths: list[Path]) -> list[str]:
    """Output name stem of each input; raises if two inputs would write the same outputs (stems that
    differ only in case count as the same: they do on case-insensitive disks)."""
    owners: dict[str, Path] = {}
    for path in paths:
        key = path.stem.casefold()
        if key in owners:
            raise InputError(f"{owners[key]} and {path} would both write outputs named '{path.stem}_*'")
        owners[key] = path
    return [path.stem for path in owners.values()]


def umask() -> int:
    """The process's file mode creation mask (read from /proc where possible, so it is never changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(path: Path) -> None:
    """Give a newly written file, or every entry of a newly written folder tree, the umask's modes
    (a folder keeps its set-group-ID bit, which it inherits from a parent that has it)."""
    mask = umask()
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        if not entry.is_symlink():
            keep = entry.stat().st_mode & stat.S_ISGID if entry.is_dir() else 0
            os.chmod(entry, ((0o777 if entry.is_dir() else 0o666) & ~mask) | keep)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a folder tree and the folder itself, to disk."""
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush a file or folder entry to disk (best effort where the platform cannot fsync folders)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
