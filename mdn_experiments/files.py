"""Every file a tool reads from a folder, and every file it writes into one, as data: the one place
where files are opened.

Reading (`read_bytes`, `read_text`, `read_yaml`, `read_json`): a file of a run, sweep or suite folder
is a regular file, never a link, a FIFO or a device, and below a stated size (RECORD_BYTES for
YAML, JSON and text records, MODEL_BYTES for model.pt and state.pt); it is opened without blocking,
so a FIFO cannot hang a tool and /dev/zero cannot fill the memory. A data file the user names (a
table, MNIST, the UCI suite) may be reached through a link (`follow=True`), but is a regular file
too. YAML anchors and aliases are refused, and every structure read back is walked with a budget
(`check_shape`: depth and number of values) before anything else walks it.

Writing (`replaced`, `write_bytes`, `write_text`): into a temporary file made in the same folder
with O_CREAT | O_EXCL | O_NOFOLLOW (an existing name, or a link planted under it, is never opened),
then renamed over the target, which is replaced whole or not at all and never followed. The
folder itself is opened with O_NOFOLLOW, and a target that is a link, a FIFO, a device or a folder
is refused. `check_folder` refuses a whole folder that holds such files, before anything (Hydra
included) writes into it.

Every refusal is a one-line FileRefused (a RunFolderError) naming the file. Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mdn_experiments.errors import RunFolderError, clip

MIB = 1024**2
RECORD_BYTES = 16 * MIB  # a YAML, JSON, CSV or text record of a folder (configs, metrics, progress)
MODEL_BYTES = 4 * 1024 * MIB  # model.pt and state.pt (read whole into memory, then unpickled as data)
DATA_TEXT_BYTES = 64 * MIB  # a small data file read whole (index files, n_splits.txt, references)
MAX_DEPTH = 32  # nesting of a structure read back (configs are 4 deep)
MAX_VALUES = 200_000  # values visited in a structure read back (aliases count once per path)
MAX_FOLDER_ENTRIES = 1_000_000  # entries check_folder walks before it gives up (a refusal)
KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


class FileRefused(RunFolderError):
    """A file is not what a folder may hold (a link, a special file, too large, too deep)."""


def kind(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def size_text(n_bytes: int) -> str:
    for unit, size in (("GiB", 1024 * MIB), ("MiB", MIB)):
        if n_bytes >= size:
            return f"{n_bytes / size:.4g} {unit}"
    return f"{n_bytes} bytes"


def _open_regular(path: Path, follow: bool) -> int:
    """A read-only descriptor of a regular file (FileRefused otherwise); never blocks on a FIFO."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow:
            raise FileRefused(f"{clip(path)} is a symbolic link: the files of a folder are read only as regular files")
        if err.errno == errno.ENXIO:  # a socket (or a FIFO opened for writing without a reader)
            raise FileRefused(f"{clip(path)} is a socket: only regular files are read") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileRefused(f"{clip(path)} is {kind(mode)}: only regular files are read")
    os.set_blocking(fd, True)
    return fd


def read_descriptor(path: Path | str, *, follow: bool = False) -> int:
    """A read-only descriptor of a regular file (FileRefused for a link, a FIFO, a device)."""
    return _open_regular(Path(path), follow)


def read_bytes(path: Path | str, limit: int = RECORD_BYTES, *, follow: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (FileRefused otherwise; OSError when
    it cannot be opened). `follow`: the file may be reached through a link (a user's data file)."""
    path = Path(path)
    fd = _open_regular(path, follow)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise FileRefused(
                f"{clip(path)} is {size_text(size)}, more than the {size_text(limit)} such a file may hold"
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while it was read
                raise FileRefused(f"{clip(path)} holds more than the {size_text(limit)} such a file may hold")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path | str, limit: int = RECORD_BYTES, *, follow: bool = False) -> str:
    """read_bytes as UTF-8 text (FileRefused when it is not)."""
    raw = read_bytes(path, limit, follow=follow)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused(f"{clip(path)} is not UTF-8 text") from None


def regular_size(path: Path | str, *, follow: bool = True) -> int:
    """The size of a regular file (FileRefused for a link when not `follow`, a FIFO, a device)."""
    fd = _open_regular(Path(path), follow)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def check_shape(tree: Any, source: str, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> None:
    """Refuse a structure nested deeper than `max_depth` or holding more than `max_values` values,
    before any recursive walk: an iterative walk that counts every visit, so shared references
    (YAML aliases, pickle memos) cannot make it exponential."""
    stack: list[tuple[Any, int]] = [(tree, 0)]
    visited = 0
    while stack:
        node, depth = stack.pop()
        visited += 1
        if visited > max_values:
            raise FileRefused(
                f"{clip(source)} holds more than {max_values} values: not a file a tool of this project wrote"
            )
        if isinstance(node, (dict, list, tuple)):
            if depth >= max_depth:
                raise FileRefused(
                    f"{clip(source)} is nested deeper than {max_depth} levels: not a file this project wrote"
                )
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
            if isinstance(node, dict):
                stack.extend((key, depth + 1) for key in node)


def _yaml_loader():
    import yaml

    class NoAliases(yaml.SafeLoader):
        """safe_load without anchors and aliases: a record of ours never shares a node."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.constructor.ConstructorError(
                    None, None, "holds a YAML alias (anchors and aliases are refused)", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliases


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as plain data: safe_load, no aliases, a bounded shape (FileRefused otherwise)."""
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise FileRefused(f"{clip(source)} is nested too deep to be read") from None
    except yaml.YAMLError as err:
        raise FileRefused(f"{clip(source)} cannot be read ({clip(' '.join(str(err).split()), 160)})") from None
    check_shape(data, source)
    return data


def parse_json(text: str, source: str) -> Any:
    """JSON text as plain data with a bounded shape (FileRefused otherwise)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise FileRefused(f"{clip(source)} is nested too deep to be read") from None
    except ValueError as err:
        raise FileRefused(f"{clip(source)} cannot be read ({clip(' '.join(str(err).split()), 160)})") from None
    check_shape(data, source)
    return data


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def read_yaml(path: Path | str) -> dict:
    """A YAML mapping from a folder (RunFolderError in one line when it is missing, unreadable,
    not a regular file, too large, aliased, too deep or not a mapping)."""
    try:
        data = parse_yaml(read_text(path), str(path))
    except OSError as err:
        raise RunFolderError(f"{clip(path)} cannot be read ({_reason(err)})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{clip(path)} is empty or not a mapping")
    return data


def read_json(path: Path | str) -> dict:
    """A JSON object from a folder (as read_yaml)."""
    try:
        data = parse_json(read_text(path), str(path))
    except OSError as err:
        raise RunFolderError(f"{clip(path)} cannot be read ({_reason(err)})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{clip(path)} is not a JSON object")
    return data


# --- writing ------------------------------------------------------------------------------------


def _open_folder(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR) and folder.is_symlink():
            raise FileRefused(
                f"{clip(folder)} is a symbolic link: files are written only into real folders (nothing was written)"
            ) from None
        raise


def _check_target(dir_fd: int, name: str, path: Path) -> None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise FileRefused(f"{clip(path)} is {kind(mode)}: it is not replaced (nothing was written); remove it first")


@contextlib.contextmanager
def replaced(
    path: Path | str, *, text: bool = False, durable: bool = False, mode: int = 0o666, before_rename=None
) -> Iterator[IO]:
    """`with replaced(path) as fh: ...` writes into a new temporary file beside `path` and, when
    the block ends without an error, renames it over `path`: whole or not at all, never through a
    link. `text`: a text file (UTF-8, newlines untranslated); `durable`: fsync before the rename;
    `before_rename(dir_fd)`: called once the new file is complete, just before it takes the name.
    FileRefused when the folder is a link or `path` is a link, a FIFO, a device or a folder."""
    path = Path(path)
    dir_fd = _open_folder(path.parent)
    tmp = None
    try:
        _check_target(dir_fd, path.name, path)
        for _ in range(100):
            tmp = f".{path.name[:200]}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd
                )
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 random names taken
            raise FileRefused(f"no free temporary name beside {clip(path)}")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(dir_fd)
        _check_target(dir_fd, path.name, path)
        os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
        os.close(dir_fd)


def write_bytes(path: Path | str, data: bytes, *, durable: bool = False) -> None:
    with replaced(path, durable=durable) as fh:
        fh.write(data)


def write_text(path: Path | str, text: str, *, durable: bool = False) -> None:
    with replaced(path, text=True, durable=durable) as fh:
        fh.write(text)


def make_folder(folder: Path | str, *, named: bool = False) -> Path:
    """mkdir -p, refusing a folder that is a link, unless it is one the user `named` (a run or sweep
    folder given on the command line: its real folder is used, and links inside it are refused)."""
    folder = Path(folder)
    if folder.is_symlink() and not named:
        raise FileRefused(f"{clip(folder)} is a symbolic link: files are written only into real folders")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_folder(folder: Path | str, what: str = "a folder of mdn-experiments") -> None:
    """Refuse (FileRefused, one line, before anything is written) a folder that holds, at any depth,
    a symbolic link, a FIFO, a socket or a device: a write of Hydra's or ours could go through it.
    The folder itself may be reached through a link the user named (its real path is used); links
    inside it are refused. A folder that does not exist yet holds nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    seen = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:  # removed meanwhile (a writer's temporary folder)
            continue
        except OSError as err:
            raise RunFolderError(f"{clip(current)} cannot be listed ({_reason(err)})") from None
        for entry in entries:
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise FileRefused(f"{clip(folder)} holds more than {MAX_FOLDER_ENTRIES} files: not {what}")
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except FileNotFoundError:  # renamed or removed meanwhile (a running writer's state files)
                continue
            if stat.S_ISDIR(mode):
                stack.append(Path(entry.path))
            elif not stat.S_ISREG(mode):
                target = f" (to {clip(os.readlink(entry.path), 120)})" if stat.S_ISLNK(mode) else ""
                raise FileRefused(
                    f"{clip(entry.path)} is {kind(mode)}{target}: {what} holds only regular files and folders, "
                    "so nothing was written (remove it, or choose another folder)"
                )


def open_lock_file(path: Path | str) -> int:
    """A read-write descriptor of a lock file (made if missing), never through a link and never a
    special file; the file is not truncated here."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FileRefused(f"{clip(path)} is a symbolic link: a lock file is a regular file (nothing was written)")
        if err.errno == errno.ENXIO:
            raise FileRefused(
                f"{clip(path)} is a socket: a lock file is a regular file (nothing was written)"
            ) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileRefused(f"{clip(path)} is {kind(mode)}: a lock file is a regular file (nothing was written)")
    os.set_blocking(fd, True)
    return fd
