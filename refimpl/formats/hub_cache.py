"""Where a checkpoint lives: a local directory, or a repo id ("org/name") already in the Hugging Face cache.

Offline only: nothing here opens a network connection. The cache layout (huggingface_hub):

    <cache>/models--org--name/refs/main             the commit hash that "main" points to
    <cache>/models--org--name/snapshots/<hash>/     config.json, model.safetensors, ... (symlinks into blobs/)
    <cache>/models--org--name/blobs/<sha>           the file contents

The cache directory, as transformers 4.37.2 picks it (utils/hub.py, huggingface_hub/constants.py): an
explicit `cache_dir`; else the first set of TRANSFORMERS_CACHE, PYTORCH_TRANSFORMERS_CACHE,
PYTORCH_PRETRAINED_BERT_CACHE (deprecated, but still first in 4.37.2), HF_HUB_CACHE,
HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub; else ~/.cache/huggingface/hub.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Union

from . import CheckpointError, read_bounded

CACHE_VARIABLES = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE",
                   "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
REPO_ID = re.compile(r"^[\w.\-]{1,96}(/[\w.\-]{1,96})?$")  # huggingface_hub validate_repo_id
COMMIT = re.compile(r"^[0-9a-f]{40}$")  # what huggingface_hub writes into refs/<revision>
NAME = re.compile(r"^[\w.\-]{1,255}$")  # one component of a branch or tag name ("main", "v1.0", "refs/pr/1")
MAX_REF_BYTES = 1024  # a refs/* file holds one 40-character hash


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """Neither a local path nor a cached repo: a CheckpointError (ValueError) and a FileNotFoundError."""


def hub_cache_dir(cache_dir=None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """The directory holding models--org--name folders (see the module docstring for the order)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ if environ is None else environ
    for variable in CACHE_VARIABLES:
        if env.get(variable):
            return Path(os.path.expandvars(env[variable])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "huggingface" / "hub"


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name)) and "--" not in name and ".." not in name


def resolve_checkpoint(name: Union[str, Path], cache_dir=None, revision: Optional[str] = None) -> Path:
    """A local path as it is; a repo id -> its snapshot directory in the cache. Raises CheckpointNotFound."""
    path = Path(name).expanduser()
    if path.exists() or isinstance(name, Path) or not is_repo_id(str(name)):
        return path  # a local path (a missing one fails later, naming the file it wanted)
    cache = hub_cache_dir(cache_dir)
    repo = cache / ("models--" + str(name).replace("/", "--"))
    if not repo.is_dir():
        raise CheckpointNotFound(f"{name!r} is neither a local directory nor in the Hugging Face cache "
                                f"({repo} does not exist). refimpl never downloads; fetch it first, e.g. "
                                f"`huggingface-cli download {name}`, or pass cache_dir=")
    revision = "main" if revision is None else revision
    commit = _commit(repo, name, _check_revision(revision))
    snapshots = repo / "snapshots"
    snapshot = snapshots / commit
    if not snapshot.is_dir():
        have = sorted(p.name for p in snapshots.glob("*")) if snapshots.is_dir() else []
        raise CheckpointNotFound(f"{name!r} revision {revision!r} (commit {commit!r}) is not in the cache at "
                                f"{repo}; cached snapshots: {have or 'none'}")
    if not _inside(snapshot, snapshots):  # a snapshot that is a symlink out of the cache
        raise CheckpointError(f"{snapshot} resolves to {snapshot.resolve()}, outside the cache's {snapshots}")
    return snapshot


def _check_revision(revision) -> str:
    """A branch, tag ("v1.0", "refs/pr/1": "/"-separated simple names) or commit hash; never "..", "/x"."""
    if not (isinstance(revision, str) and all(NAME.match(part) and part.strip(".") for part in revision.split("/"))):
        raise ValueError(f"revision {revision!r:.200} is not a branch, tag or commit name (expected names made of "
                         "letters, digits, '.', '-', '_', separated by '/')")
    return revision


def _commit(repo: Path, name: str, revision: str) -> str:
    """The commit hash refs/<revision> holds; a revision without a ref is taken as a commit hash itself."""
    ref = repo / "refs" / revision
    if not (ref.exists() or ref.is_symlink()):
        return revision
    text = read_bounded(ref, MAX_REF_BYTES, f"ref of revision {revision!r}")  # regular files only, size bound
    commit = text.decode("ascii", "replace").strip()
    if not (COMMIT.match(commit) or (NAME.match(commit) and commit.strip("."))):
        raise CheckpointError(f"{ref}: {name!r} revision {revision!r} points to {commit!r:.100}; expected a "
                              "40-hex-digit commit hash (a damaged or hostile cache)")
    return commit


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False
