"""Loading what users hand the CLI: model factories, checkpoints, ``.npz`` arrays; atomic writes."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompile.errors import InputError


def load_factory(spec: str) -> nn.Module:
    """Builds the model named by ``path/to/file.py:factory`` (a callable returning an nn.Module)."""
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text.endswith(".py") or not name.isidentifier():
        raise InputError(f"model {spec!r} must look like path/to/file.py:factory")
    path = Path(path_text)
    if not path.is_file():
        raise InputError(f"model file {path_text!r} does not exist")
    mod_name = f"_snncompile_model_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise InputError(f"cannot import {path_text!r} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # the model file may import its neighbours, as when run as a script
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        raise InputError(f"importing {path_text!r} failed: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(folder)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise InputError(f"{path_text!r} has no callable {name!r}")
    try:
        model = factory()
    except Exception as e:
        raise InputError(f"{spec} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec} returned {type(model).__name__}, expected a torch.nn.Module")
    return model.eval()


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Loads a ``state_dict`` file (``torch.load(weights_only=True)``) into ``model``, strictly."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as e:
        raise InputError(f"cannot read checkpoint {str(path)!r}: {_load_failure(e)}") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"checkpoint {str(path)!r} is not a state_dict (a mapping of names to tensors)")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"checkpoint {str(path)!r} does not fit the model: missing keys {missing}, unexpected keys "
            f"{unexpected}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise InputError(
            f"checkpoint {str(path)!r} has tensors of the wrong shape (checkpoint vs model): {wrong}"
        )
    model.load_state_dict(state)


def _load_failure(e: Exception) -> str:
    """The useful line of a torch.load failure (its first line advises weights_only=False, which we
    never do: a checkpoint must be a plain state_dict)."""
    text = str(e)
    for line in text.splitlines():
        if "WeightsUnpickler error" in line:
            return "not a plain state_dict of tensors (" + line.strip() + ")"
    if "Weights only load failed" in text:
        return "not a plain state_dict of tensors"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"not a torch checkpoint ({type(e).__name__}{': ' + first if first else ''})"


def load_npz(path: str | os.PathLike[str], key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if key not in data:
                raise InputError(f"{str(path)!r} has no array {key!r} (found {sorted(data.files)})")
            return np.asarray(data[key])
    except FileNotFoundError:
        raise InputError(f"input file {str(path)!r} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {str(path)!r} as .npz: {e}") from None


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it over ``path``."""
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {str(target)!r}: directory {str(target.parent)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"cannot write {str(target)!r}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(f"cannot write {str(target)!r}: {e.strerror}") from None
        raise


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(path, buf.getvalue())
