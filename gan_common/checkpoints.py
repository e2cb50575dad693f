"""Crash-safe checkpoint folders, the same for both backends (docs/reliability.md, "Checkpoints").

A checkpoint is `<root>/<step>/`. A backend writes its parts (its state, the neutral weight file) into a
hidden scratch folder `<root>/.<step>.tmp`; `save_step` then adds MANIFEST (the size and sha256 of every
file, written last) and renames the folder to `<step>`. So a step folder counts only once complete, and a
crash leaves at worst a scratch folder, which readers ignore and the next save removes.

Readers take the newest step folder whose manifest checks out; they skip any other one (empty, a part or
the manifest missing, a file truncated or changed, a symlink), fall back to the one before, and say so in
one warning line on stderr. Entries of `<root>` that are not step folders (`abc`, `0400`) are ignored with
that warning too, and symlinks are never followed: nothing outside the run folder is read or deleted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence

from gan_common.errors import UserError, os_error_text
from gan_common.outputs import write_atomically

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "gan-checkpoint-manifest-v1"
KEEP = 3  # complete checkpoints kept at each save; older step folders are deleted (_prune)
_STEP = re.compile(r"(0|[1-9][0-9]*)")  # a step folder's name: the step in decimal, no leading zeros
_SCRATCH = re.compile(r"\.[0-9]+\.(tmp|old)")  # a save in progress (or cut short), orbax's own scratch inside it


# ----------------------------------------------------------------------------- writing
def save_step(root: str, step: int, write: Callable[[str], None], backend: str, primary: bool = True) -> str:
    """Write checkpoint `step` under `root` crash-safely; keep the newest KEEP; return its folder.

    `write(folder)` creates the scratch `folder` and writes the backend's parts into it (every process of a
    multi-process run calls it; `primary`: this process alone adds the manifest, renames and prunes). A full
    disk, or any other OSError, becomes one UserError naming the last good checkpoint, and no partial folder
    is left behind.
    """
    folder, tmp = os.path.join(root, str(step)), os.path.join(root, f".{step}.tmp")
    _refuse_link(root)
    try:
        if primary:
            os.makedirs(root, exist_ok=True)
            _remove_scratch(root)  # of saves a crash cut short
        write(tmp)
        if primary:
            write_manifest(tmp, step, backend)
            _replace(tmp, folder)
            _prune(root)
    except Exception as e:
        if primary:
            _remove_scratch(root)
        last = _last_good(root)
        if disk_full(e):
            raise UserError(f"disk full (ENOSPC) while writing checkpoint {folder}; nothing of it was kept, {last}; "
                            f"free some space, then continue with --resume") from None
        if isinstance(e, OSError):
            raise UserError(f"cannot write checkpoint {folder} ({os_error_text(e)}); {last}") from None
        raise
    return folder


def write_manifest(folder: str, step: int, backend: str) -> None:
    """MANIFEST in `folder`: the size and sha256 of each file below it, paths relative to it with '/'."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):  # followlinks=False: a checkpoint holds no links
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if rel in (MANIFEST, MANIFEST + ".tmp"):  # a folder signed again (a test's edit) lists no old manifest
                continue
            files[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "backend": backend, "files": files}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_atomically(os.path.join(folder, MANIFEST), lambda f: f.write(text), binary=False)


def disk_full(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a full disk: OSError ENOSPC, or tensorstore's text for it (orbax)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or "[os_error_code='28']" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _replace(tmp: str, folder: str) -> None:
    """Rename `tmp` to `folder`; a step saved again (a resume that stopped at once) replaces the old folder,
    which is moved aside first (a symlink is unlinked, never followed)."""
    if os.path.islink(folder) or os.path.isfile(folder):
        os.remove(folder)
    elif os.path.isdir(folder):
        old = os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.old")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
        return
    os.replace(tmp, folder)


def _prune(root: str) -> None:
    """Delete all but the newest KEEP complete step folders, and incomplete ones older than the newest kept
    (a crash leaves none: those are damaged by hand, or of a run from before manifests, kept till passed)."""
    kept = 0
    for _, path in _step_folders(root)[0]:
        if os.path.islink(path) or not os.path.isdir(path):
            continue  # not ours to delete
        complete = os.path.isfile(os.path.join(path, MANIFEST))
        if (complete and kept < KEEP) or (not complete and not kept):
            kept += complete
            continue
        shutil.rmtree(path, ignore_errors=True)


def _remove_scratch(root: str) -> None:
    for name in os.listdir(root) if os.path.isdir(root) else ():
        path = os.path.join(root, name)
        if _SCRATCH.match(name):
            if os.path.islink(path) or not os.path.isdir(path):
                os.remove(path)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _last_good(root: str) -> str:
    """For an error message: the checkpoint a --resume would now use."""
    try:
        return f"the last good checkpoint is {newest_checkpoint(root, warn=False)}"
    except UserError:
        return "no good checkpoint is kept yet"


# ----------------------------------------------------------------------------- reading
def newest_checkpoint(root: str, required: Sequence[str] = (), backend: str | None = None, warn: bool = True) -> str:
    """The newest complete, intact step folder under `root` (its manifest checks out; it holds `required`).

    Others newer than it are skipped, and entries that are no step folder ignored, with one warning line on
    stderr (`warn`). `backend`: the newest good folder must have been written by it (a resume), else a
    UserError. No good folder: a UserError listing why each was skipped.
    """
    _refuse_link(root)
    steps, problems = _step_folders(root)
    for _, path in steps:
        written_by = _manifest(path).get("backend", backend)
        if backend is not None and written_by != backend:
            raise UserError(f"checkpoint {path} was written by {written_by}; resume a run with the backend that "
                            f"trained it")
        why, manifest = check_folder(path, required)
        if why is None:
            if problems and warn:
                print(f"warning: {'; '.join(problems)}; using {path}", file=sys.stderr)
            return path
        problems.append(f"{path} is {why}")
    found = f": {'; '.join(problems)}" if problems else ""
    raise UserError(f"no complete checkpoint in {root}{found}; start the run afresh in another --out-dir")


def step_dirs(root: str) -> list[int]:
    """Steps of the complete step folders under `root` (a manifest, not yet checked), newest first."""
    return [step for step, path in _step_folders(root)[0]
            if not os.path.islink(path) and os.path.isfile(os.path.join(path, MANIFEST))]


def has_step_folders(root: str) -> bool:
    """Whether `root` holds any entry named like a step folder (complete or not)."""
    return bool(_step_folders(root)[0])


def check_folder(folder: str, required: Sequence[str] = ()) -> tuple[str | None, dict]:
    """(None, manifest) if `folder` is a complete checkpoint whose files match its manifest, else
    (why not, {}): "incomplete (no weights.safetensors)", "corrupt (state.pt fails its sha256 check)", ...
    `required`: the parts (top-level names) it must hold, in the order they are written."""
    if os.path.islink(folder):
        return "a symlink (not followed)", {}
    if not os.path.isdir(folder):
        return "not a folder", {}
    names = set(os.listdir(folder))
    if not names:
        return "incomplete (empty)", {}
    for name in (*required, MANIFEST):
        if name not in names:
            return f"incomplete (no {name})", {}
    manifest = _manifest(folder)
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        return f"corrupt (unreadable {MANIFEST})", {}
    for rel, entry in files.items():
        why = _check_file(folder, rel, entry)
        if why is not None:
            return why, {}
    for name in required:
        if not any(rel == name or rel.startswith(name + "/") for rel in files):
            return f"incomplete ({MANIFEST} lists no {name})", {}
    return None, manifest


def check_named_file(path: str) -> str | None:
    """Why the file `path` fails the manifest beside it (None: it matches, or there is no manifest: a file
    the user made or copied is read as it is)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        with open(os.path.join(folder, MANIFEST), "rb") as f:
            files = json.loads(f.read())["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"corrupt (unreadable {MANIFEST})"
    if not isinstance(files, dict) or not isinstance(files.get(name), dict):
        return f"not listed in its {MANIFEST}"
    return _check_file(folder, name, files[name])


def _manifest(folder: str) -> dict:
    """The folder's manifest as written, or {} if it has none or it does not parse (never a symlink's)."""
    try:
        if os.path.islink(folder):
            return {}
        with open(os.path.join(folder, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        return {}


def _check_file(folder: str, rel: str, entry) -> str | None:
    path = os.path.join(folder, *rel.split("/"))
    inside = os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)
    if not isinstance(entry, dict) or not inside or rel.startswith("/") or ".." in rel.split("/"):
        return f"corrupt ({MANIFEST} entry {rel!r} is not a file inside the folder)"
    if os.path.islink(path) or not os.path.isfile(path):
        return f"incomplete (no {rel})"
    size = os.path.getsize(path)
    if size != entry.get("size"):
        return f"corrupt ({rel} is {size} bytes, its manifest says {entry.get('size')})"
    if _sha256(path) != entry.get("sha256"):
        return f"corrupt ({rel} fails its sha256 check)"
    return None


def _step_folders(root: str) -> tuple[list[tuple[int, str]], list[str]]:
    """([(step, path)] of the entries named like step folders, newest first; [one line per other entry]).
    Hidden names (scratch folders of a save) are neither."""
    if not os.path.isdir(root):
        return [], []
    steps, others = [], []
    for name in sorted(os.listdir(root)):
        if _STEP.fullmatch(name):
            steps.append((int(name), os.path.join(root, name)))
        elif not name.startswith("."):
            others.append(f"{os.path.join(root, name)} is not a step folder (ignored)")
    return sorted(steps, reverse=True), others


def _refuse_link(root: str) -> None:
    if os.path.islink(root):
        raise UserError(f"{root} is a symbolic link (to {os.readlink(root)}); checkpoints are read and written only "
                        f"inside the run folder: replace the link with the folder it points to")


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
