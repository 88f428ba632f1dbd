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
from typing import Any, TypeGuard

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


# where training scripts put the weights in a checkpoint dict ({"epoch": ..., "model_state_dict": ...})
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
# what wrappers prepend to every key: nn.DataParallel / DistributedDataParallel, torch.compile
WRAPPER_PREFIXES = {"module.": "nn.DataParallel", "_orig_mod.": "torch.compile"}


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> str | None:
    """Loads a checkpoint (``torch.load(weights_only=True)``) into ``model``, strictly.

    The checkpoint is a ``state_dict``, or a dict holding one beside other entries (epoch, optimizer
    state): under one of :data:`STATE_DICT_KEYS`, or else under the only key whose value is one (two
    are refused as ambiguous); keys that all carry a wrapper's prefix
    (:data:`WRAPPER_PREFIXES`) lose it. Returns a note saying how the state_dict was found (None for a
    plain one).
    """
    name = str(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"checkpoint {name!r} does not exist") from None
    except Exception as e:
        raise InputError(f"cannot read checkpoint {name!r}: {_load_failure(e)}") from None
    state, key, beside = _unwrap(loaded, name)
    where = [f"its state_dict under {key!r}"] if key is not None else []
    expected = model.state_dict()
    for prefix, wrapper in WRAPPER_PREFIXES.items():
        if (
            state
            and all(k.startswith(prefix) for k in state)
            and not any(k.startswith(prefix) for k in expected)
        ):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            where.append(f"keys without the {wrapper} prefix {prefix!r}")
    label = f"checkpoint {name!r}" + (f" ({', '.join(where)})" if where else "")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"{label} does not fit the model: {_count(missing, 'missing key')}, "
            f"{_count(unexpected, 'unexpected key')}{_qat_hint(expected, state)}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise InputError(f"{label} has tensors of the wrong shape (checkpoint vs model): {wrong}")
    model.load_state_dict(state)
    if not where:
        return None
    return f"loaded {label}" + (f"; it also holds {_names(beside, 8)}" if beside else "")


def _is_state_dict(value: object) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return isinstance(value, Mapping) and all(isinstance(v, torch.Tensor) for v in value.values())


def _unwrap(loaded: object, name: str) -> tuple[Mapping[str, torch.Tensor], str | None, list[str]]:
    """The state_dict in a loaded checkpoint, the key it is under (None: it is the checkpoint) and the
    checkpoint's other keys."""
    if _is_state_dict(loaded):
        return loaded, None, []
    if not isinstance(loaded, Mapping):
        raise InputError(f"checkpoint {name!r} is not a state_dict (a mapping of names to tensors)")
    # the usual keys first; else the one entry of any name that is a state_dict
    found = [k for k in STATE_DICT_KEYS if _is_state_dict(loaded.get(k))] or [
        k for k, v in loaded.items() if _is_state_dict(v)
    ]
    if not found:
        raise InputError(
            f"checkpoint {name!r} is a dict of {_names(list(loaded), 8)} and none of them is a state_dict "
            "(a mapping of names to tensors); save model.state_dict(), alone or under 'state_dict'"
        )
    if len(found) > 1:
        raise InputError(
            f"checkpoint {name!r} holds several state_dicts (under {_names(found, len(found))}); "
            "save the model's alone: torch.save(model.state_dict(), path)"
        )
    return loaded[found[0]], found[0], [k for k in loaded if k != found[0]]


def _names(keys: list[str], shown: int) -> str:
    """The first ``shown`` keys, quoted, and ``...`` when there are more."""
    return ", ".join(repr(k) for k in keys[:shown]) + (", ..." if len(keys) > shown else "")


def _count(keys: list[str], what: str, shown: int = 4) -> str:
    """``3 missing keys ('a', 'b', 'c')``: the count and the first few."""
    if not keys:
        return f"no {what}s"
    return f"{len(keys)} {what}{'s' if len(keys) > 1 else ''} ({_names(keys, shown)})"


def _is_quantizer_key(key: str) -> bool:
    """A key that only a quantization-aware model has: a parametrization (prepare_qat's grids) or a
    brevitas quantizer (``weight_quant``, ``act_quant``, ...)."""
    return any(part == "parametrizations" or part.endswith("_quant") for part in key.split("."))


def _qat_hint(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """Advice when one of model and checkpoint is quantization-aware and the other is float."""
    model_qat = any(map(_is_quantizer_key, expected))
    checkpoint_qat = any(map(_is_quantizer_key, state))
    if model_qat and not checkpoint_qat:
        return (
            "; the checkpoint has no quantizer keys (a float model's) and the model went through prepare_qat: "
            "load the float checkpoint before prepare_qat (in the factory: model.load_state_dict(torch.load(path)), "
            "then return prepare_qat(model)), or give the checkpoint of the trained QAT model"
        )
    if checkpoint_qat and not model_qat:
        return (
            "; the checkpoint has quantizer keys (a prepare_qat model's) and the model is float: "
            "have the factory return prepare_qat(model) so that the checkpoint loads into it"
        )
    return ""


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
