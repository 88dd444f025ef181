"""Atomic writes: nothing half-written is ever left at a final path, and nothing a user wrote is deleted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path

from filelock import FileLock

from ._arguments import checked_arguments
from ._errors import SaveRefusedError, SpacegraphFileNotFoundError, SpacegraphValueError

MARKER = ".spacegraph-save"  # written first into every box atomic_dir makes: proof that a leftover is ours
OWNERSHIP = ".spacegraph-files.json"  # in every saved folder: what the save wrote, by sha256
OWNERSHIP_FORMAT = "spacegraph-files"
SHOWN = 5  # foreign names listed in an error
NAME_MAX = 255  # bytes in one file name, on Linux and macOS file systems


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
@checked_arguments
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds."""
    final = Path(final)
    _check_encodable(final)
    if final.is_dir():
        raise SaveRefusedError(f"cannot write {final}: it is a folder; give the path of a file")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@checked_arguments
def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise SpacegraphValueError(f"cannot write {final}: the text is not valid Unicode ({err.reason})") from err
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
@checked_arguments
def atomic_dir(
    final: str | os.PathLike, *, overwrite: bool = False, own: Collection[str] | None = None
) -> Iterator[Path]:
    """Yield an empty folder; it replaces ``final`` only if the block succeeds, so ``final`` always holds either
    the old or the new content, never a mix.

    Nothing the save did not write is deleted. Each save records what it wrote, by sha256, in ``OWNERSHIP``
    (``.spacegraph-files.json``); an existing folder at ``final`` is replaced only if it is empty or every entry
    in it is one a save recorded there, unchanged since. Otherwise (a user's file beside the artifact, a file
    edited since, a folder saved by an earlier version that kept no record) :class:`SaveRefusedError` lists them,
    unless ``overwrite`` is true. A file or link at ``final`` is always refused. ``own`` (file name patterns) is
    no longer needed and is ignored.

    Work happens in boxes beside ``final`` named ``.NAME.spacegraph-<hex>.tmp`` (the new folder) and
    ``.NAME.spacegraph-<hex>.old`` (the replaced one), each holding a marker file naming the process that made
    it. A save killed midway leaves such a box; the next save of ``final`` removes the boxes whose process is gone
    (and no other sibling), and if the kill landed between the two renames of the swap (``final`` missing),
    :func:`recover_interrupted_save` (called by that save and by loaders) puts the old folder back first. Saves of
    one ``final`` by processes of one machine take turns (:func:`_save_lock`), so the folder ends as one complete
    save, the last; processes of several machines that race are refused clearly.
    """
    if own is not None:
        warnings.warn(
            "atomic_dir(own=...) is no longer needed: a save records the files it wrote by content and replaces "
            "only those; pass overwrite=True to replace a folder holding others",
            DeprecationWarning,
            stacklevel=3,
        )
    final = Path(os.path.abspath(final))
    _make_parent(final)
    with _save_lock(final):
        recover_interrupted_save(final)
        _remove_leftovers(final)
        _check_replaceable(final, overwrite)
        box = _new_box(final, "tmp")
        try:
            payload = box / final.name
            payload.mkdir()
            yield payload
            _usual_modes(payload)
            _record_ownership(payload)
            _check_replaceable(final, overwrite)
            _swap(payload, final)
        finally:
            _remove_box(box)


def _save_lock(final: Path) -> FileLock:
    """A lock per saved folder, in the system's temporary folder (named by a hash of the absolute path), so that no
    lock file is left among the user's files."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    locks = Path(tempfile.gettempdir()) / f"spacegraph-save-locks-{user}"
    locks.mkdir(mode=0o700, exist_ok=True)
    return FileLock(locks / f"{hashlib.sha256(str(final).encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.lock")


def _usual_modes(folder: Path) -> None:
    """Give the files a save wrote the modes the user's umask gives any new file (writers such as safetensors'
    ``save_file`` make 0600 temporaries), so a shared folder's readers can read them."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


@checked_arguments
def recover_interrupted_save(final: str | os.PathLike) -> Path:
    """``final``, put back from the old box of a save killed between the two renames of its swap (``final``
    missing, the old folder complete in its box); a no-op otherwise."""
    final = Path(os.path.abspath(final))
    try:
        too_long = len(os.fsencode(final.name)) > NAME_MAX
    except UnicodeEncodeError:
        too_long = True  # no file system holds such a name either
    if too_long:
        raise SpacegraphFileNotFoundError(f"{final!r}: no such folder (no file system can hold its name)")
    if not os.path.lexists(final):
        for box in _boxes(final, "old"):
            with contextlib.suppress(OSError):  # another process restored it first, or the folder is read-only
                os.rename(box / final.name, final)
                break
    return final


def _check_encodable(final: Path) -> None:
    """Refuse a path the file system cannot hold: one that cannot be encoded, or a name too long to leave room for
    the temporary names beside it."""
    try:
        name = os.fsencode(final.name)
        if b"\0" in os.fsencode(final):
            raise ValueError("embedded null byte")
    except (UnicodeEncodeError, ValueError) as err:
        raise SaveRefusedError(f"cannot save to {final!r}: the path cannot be encoded for the file system") from err
    if len(name) > NAME_MAX - len(".spacegraph-000000000000.tmp") - 1:
        raise SaveRefusedError(f"cannot save to {final}: its name is {len(name)} bytes long; use a shorter one")


def _make_parent(final: Path) -> None:
    _check_encodable(final)
    if not final.name:
        raise SaveRefusedError(f"cannot save to {final}: give a folder below it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SaveRefusedError(f"cannot save to {final}: its parent folder cannot be made ({err})") from err


def _check_replaceable(final: Path, overwrite: bool) -> None:
    if not os.path.lexists(final):
        return
    if final.is_symlink() or not final.is_dir():
        kind = "a link" if final.is_symlink() else "a file"
        raise SaveRefusedError(f"cannot save to {final}: it is {kind}, not a folder; remove it or choose another")
    if overwrite:
        return
    foreign = not_written_by_spacegraph(final)
    if foreign:
        listed = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else "")
        raise SaveRefusedError(
            f"cannot save to {final}: it holds files this save did not write or that changed since ({listed}); a "
            f"save replaces only a missing or empty folder or one whose every file a spacegraph save recorded in "
            f"{OWNERSHIP}, unchanged; choose another folder, or pass overwrite=True to replace it"
        )


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _record_ownership(payload: Path) -> None:
    """Write ``OWNERSHIP`` into a filled folder: the relative path and sha256 of every file in it."""
    files = {}
    for folder, _, names in os.walk(payload):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                files[path.relative_to(payload).as_posix()] = file_sha256(path)
    record = {"format": OWNERSHIP_FORMAT, "files": dict(sorted(files.items()))}
    (payload / OWNERSHIP).write_text(json.dumps(record, indent=1), encoding="utf-8")


def _recorded_files(folder: Path) -> dict[str, str]:
    """The files ``folder``'s ownership record lists, with their sha256; none if it has no readable record."""
    try:
        record = json.loads((folder / OWNERSHIP).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    files = record.get("files") if isinstance(record, dict) and record.get("format") == OWNERSHIP_FORMAT else None
    if not isinstance(files, dict):
        return {}
    return {name: sha for name, sha in files.items() if isinstance(sha, str)}


def not_written_by_spacegraph(folder: str | os.PathLike) -> list[str]:
    """The entries below ``folder`` (relative paths) that no spacegraph save recorded there, or that changed since
    it did: links, special files, files missing from the record or whose content differs. Empty folders count as
    nobody's; the record itself is the save's."""
    folder = Path(folder)
    recorded = _recorded_files(folder)
    foreign = []
    for parent, dirs, names in os.walk(folder):
        for name in sorted(dirs + names):
            path = Path(parent, name)
            relative = path.relative_to(folder).as_posix()
            if relative == OWNERSHIP or (path.is_dir() and not path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file() or recorded.get(relative) != file_sha256(path):
                foreign.append(relative)
    return foreign


def _swap(payload: Path, final: Path) -> None:
    """Move ``payload`` to ``final``; an existing ``final`` goes into a marked box first and is removed last."""
    if not os.path.lexists(final):
        os.rename(payload, final)
        return
    old = _new_box(final, "old")
    try:
        os.rename(final, old / final.name)
    except FileNotFoundError as err:  # another machine's save moved it away meanwhile
        _remove_box(old)
        raise SaveRefusedError(f"{final} is being saved by another process at the same time; save again") from err
    try:
        os.rename(payload, final)
    except BaseException:
        os.rename(old / final.name, final)
        raise
    _remove_box(old)


def _box_pattern(final: Path, kind: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(final.name)}\.spacegraph-[0-9a-f]{{12}}\.{kind}")


def _new_box(final: Path, kind: str) -> Path:
    box = final.with_name(f".{final.name}.spacegraph-{secrets.token_hex(6)}.{kind}")
    box.mkdir(mode=0o700)
    (box / MARKER).write_text(f"{socket.gethostname()}\n{os.getpid()}\n", encoding="utf-8")
    return box


def _boxes(final: Path, kind: str) -> list[Path]:
    """Boxes of ``final`` of this kind left by processes that are gone, empty ones included (a kill just after
    the box was made); never a box of a save still running, nor anything without our exact name and marker."""
    pattern = _box_pattern(final, kind)
    try:
        siblings = list(final.parent.iterdir())
    except OSError:  # no parent folder (so nothing to recover), or one we may not list
        return []
    found = [p for p in siblings if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(p for p in found if ((p / MARKER).is_file() and not _owner_alive(p)) or not any(p.iterdir()))


def _owner_alive(box: Path) -> bool:
    try:
        host, pid = (box / MARKER).read_text(encoding="utf-8").split()
        if host != socket.gethostname():
            return True  # another machine's save (a shared disk): never ours to judge
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    except (OSError, ValueError):
        return False  # a marker cut short by a kill
    return True


def _remove_leftovers(final: Path) -> None:
    for kind in ("tmp", "old"):
        for box in _boxes(final, kind):
            _remove_box(box)


def _remove_box(box: Path) -> None:
    """Remove a box, its marker last, so a kill midway leaves a box still marked (or empty): removable later."""
    if not box.is_dir():
        return
    for entry in box.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (box / MARKER).unlink(missing_ok=True)
    box.rmdir()
