"""Training checkpoints that can be resumed exactly and cannot run code when read.

One checkpoint is one file, ``checkpoint.safetensors`` in the user's ``checkpoint_dir``: the tensors
(parameters, buffers, Adam moments, RNG states, the sampler's queues) and, in the same file's
header, a JSON record (epoch, running Fisher information, history, fingerprints, a SHA-256 of the
tensors).  A single file can be replaced atomically (temp file, fsync, rename, fsync of the
folder), so a kill at any moment leaves either the previous checkpoint or the new one, never a mix.
safetensors holds raw tensors only, so reading a checkpoint never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.safetensors"
# 2: Adam keeps three parameter groups (training.param_groups), so its state indices moved.
CHECKPOINT_FORMAT = 2
_META_KEY = "mssvae_checkpoint"


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_fingerprint(X: np.ndarray, codes: np.ndarray, labels, feature_names) -> str:
    """SHA-256 of the training data as the model sees it (values, study codes, labels, feature names)."""
    h = hashlib.sha256()
    X = np.ascontiguousarray(X)
    h.update(str((X.dtype, X.shape)).encode())
    h.update(X.tobytes())
    h.update(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    h.update(json.dumps([list(map(str, labels)), list(map(str, feature_names))]).encode())
    return h.hexdigest()


def save(directory, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write one checkpoint atomically into ``directory``; returns its path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    record = dict(meta, format="mssvae-checkpoint", format_version=CHECKPOINT_FORMAT,
                  tensors_sha256=_tensor_digest(tensors))
    final = directory / CHECKPOINT_FILE
    tmp = directory / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(record)})
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    # The rename itself must reach the disk before we claim the checkpoint exists.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def load(directory) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Read the checkpoint in ``directory``: (tensors, meta), or None when there is none.

    Raises ValueError naming the file when it is truncated, corrupted, of another kind or of
    another format version.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path} cannot be read (truncated or not a checkpoint): {err}") from None
    try:
        meta = json.loads(header[_META_KEY])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"{path} is not an mssvae checkpoint (no checkpoint record in its header)") from None
    check_format(meta, "mssvae-checkpoint", CHECKPOINT_FORMAT, path,
                 "Delete it or use another `checkpoint_dir`.")
    if _tensor_digest(tensors) != meta.get("tensors_sha256"):
        raise ValueError(f"checkpoint {path} does not match its checksum: corrupted or modified")
    return tensors, meta


def check_format(meta, kind: str, version: int, path, hint: str = "") -> None:
    """Refuse a JSON record that is not a ``kind`` record of format ``version`` (ValueError naming ``path``)."""
    if not isinstance(meta, dict) or meta.get("format") != kind:
        raise ValueError(f"{path} is not an {kind} file")
    if meta.get("format_version") != version:
        raise ValueError(f"{path} has format version {meta.get('format_version')}; this mssvae reads "
                         f"version {version}. {hint}".rstrip())


def check_matches(path, meta: dict, data_sha256: str, settings: dict) -> None:
    """Refuse a checkpoint written for other data or other settings, saying which differ."""
    problems = []
    if meta.get("data_sha256") != data_sha256:
        problems.append("the data differ (X, study labels or feature names)")
    saved = meta.get("settings", {})
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        problems.append("the settings differ: " + ", ".join(
            f"{k} {saved.get(k)!r} (checkpoint) vs {settings.get(k)!r} (now)" for k in changed))
    if problems:
        raise ValueError(f"`checkpoint_dir` holds a checkpoint ({path}) of another fit: {'; '.join(problems)}. "
                         "Use another `checkpoint_dir`, or delete the checkpoint to start again.")
