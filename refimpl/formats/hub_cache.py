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

from . import CheckpointError

CACHE_VARIABLES = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE",
                   "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
REPO_ID = re.compile(r"^[\w.\-]{1,96}(/[\w.\-]{1,96})?$")  # huggingface_hub validate_repo_id


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
    revision = revision or "main"
    if ".." in Path(revision).parts or revision.startswith("/"):
        raise ValueError(f"revision {revision!r} is not a branch, tag or commit name")
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision  # a branch/tag name, or a commit hash
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        have = sorted(p.name for p in (repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
        raise CheckpointNotFound(f"{name!r} revision {revision!r} (commit {commit!r}) is not in the cache at "
                                f"{repo}; cached snapshots: {have or 'none'}")
    return snapshot
