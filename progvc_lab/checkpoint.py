"""Loading checkpoints from strangers: tensors only, configs bounded before anything is built.

A ``.pt`` file is a pickle. ``torch.load(weights_only=True)`` unpickles only tensors and plain
containers (dict, list, str, numbers), so a file that carries a Python object (whose ``__reduce__``
could run any code) is refused **before** anything in it runs. Every loader of this project goes
through :func:`load_tensors`; its message for such a file says what happened and does not invite
anyone to load it with ``weights_only=False``.

A config read from a file is checked field by field against :data:`LIMITS` before a model is
built from it, so a checkpoint saying ``width: 40000`` fails with the field's name instead of
asking for gigabytes, and ``coding_threads: 0`` fails here instead of deep in the coder.

Each stage of a config is ``{class_path, init_args}`` (or, in checkpoints from before class paths,
the built-in class's arguments alone). A class path is code to import, so it must name a registered
stage or a subclass of a built-in inside progvc_lab unless the caller trusts the file
(``stages.registry.resolve``). The built-in classes' arguments are bounded by :data:`LIMITS`; any
other class gets plain JSON-like values only (``check_plain``).
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file that this project refuses to load. The message names the file and why."""


_INT, _FLOAT, _STR, _BOOL = "int", "float", "str", "bool"

# section -> field -> (kind, low, high) for numbers or (kind, allowed values) for strings.
# Generous for real models (the shipped tiny uses width 128, depth 4, V 512), small enough that
# building the modules can never ask for more than a few GB.
LIMITS: dict[str, dict[str, tuple]] = {
    "tokenizer": {
        "stride": (_INT, 1, 64), "latent_dim": (_INT, 1, 1024), "width": (_INT, 1, 2048),
        "max_width": (_INT, 1, 2048), "groups": (_INT, 1, 2048), "norm": (_STR, ("none", "group")),
        "decoder_width": (_INT, 0, 2048),
    },
    "quantizer": {
        "codebook_size": (_INT, 2, 32768),  # token ids are stored as int16 for the CRCs
        "latent_dim": (_INT, 1, 1024), "num_scales": (_INT, 1, 32),
        "beta": (_FLOAT, 0.0, 100.0), "phi_mix": (_FLOAT, 0.0, 1.0), "lookup": (_STR, ("l2", "cosine")),
    },
    "context_model": {
        "codebook_size": (_INT, 2, 32768), "latent_dim": (_INT, 1, 1024), "num_scales": (_INT, 1, 32),
        "width": (_INT, 4, 4096), "depth": (_INT, 1, 64), "heads": (_INT, 1, 128),
        "mlp_ratio": (_INT, 1, 16), "mask": (_STR, None), "window": (_INT, 0, 64),
        "head": (_STR, ("categorical", "bitwise")), "gate_head": (_BOOL,),
    },
    "codec": {
        "gop": (_INT, 1, 65535), "coder": (_STR, None), "coding_threads": (_INT, 1, 1024),
        "copy_gate": (_STR, None), "rdo_lambda": (_FLOAT, 0.0, math.inf), "rdo_p_factor": (_FLOAT, 0.0, math.inf), "rdo_candidates": (_INT, 0, 32768),
    },
}


def load_tensors(path, what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors naming ``path``."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, expected a {what} file (.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, MemoryError):
        raise
    except Exception as e:  # torch.load of a foreign or damaged file raises many types
        lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
        detail = next((x for x in lines if "GLOBAL" in x), "")
        if isinstance(e, pickle.UnpicklingError) and detail:
            raise CheckpointError(
                f"{path}: refused: the file carries pickled Python objects, not only tensors "
                f"({detail.rstrip('.')}); a progvc_lab {what} never needs them, so nothing in it was run "
                "or loaded") from None
        raise CheckpointError(f"{path} is not a progvc_lab {what} (torch cannot read it: "
                              f"{type(e).__name__}{': ' + lines[0][:200] if lines else ''})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a progvc_lab {what}: it holds a {type(obj).__name__}, not a dict")
    return obj


def check_section(section: str, values, path, allowed: dict | None = None) -> dict:
    """Check one config section (``tokenizer``, ``quantizer``, ...) against :data:`LIMITS`."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: config.{section} must be a mapping, got {type(values).__name__}")
    limits = LIMITS[section]
    out = {}
    for key, value in values.items():
        name = f"config.{section}.{key}"
        if key not in limits:
            raise CheckpointError(f"{path}: unknown field {name}")
        kind, *bounds = limits[key]
        if kind == _STR:
            choices = bounds[0] if bounds[0] is not None else (allowed or {}).get(key)
            if not isinstance(value, str) or (choices is not None and value not in choices):
                raise CheckpointError(f"{path}: {name} = {value!r} is not one of {sorted(choices or [])}")
        elif kind == _BOOL:
            if not isinstance(value, bool):
                raise CheckpointError(f"{path}: {name} = {value!r} must be true or false")
        else:
            lo, hi = bounds
            ok_type = (isinstance(value, int) if kind == _INT else isinstance(value, (int, float)))
            if isinstance(value, bool) or not ok_type or not (lo <= value <= hi) or (
                    kind == _FLOAT and math.isnan(value)):
                want = "an integer" if kind == _INT else "a number"
                raise CheckpointError(f"{path}: {name} = {value!r} is out of range (want {want} in {lo}..{hi})")
        out[key] = value
    return out


STAGES = ("tokenizer", "quantizer", "context_model")
_PLAIN_DEPTH, _PLAIN_ITEMS, _PLAIN_STR = 8, 10_000, 10_000


def check_plain(name: str, value, path, depth: int = 0, budget: list | None = None):
    """``value`` if it is plain JSON-like data (None, bool, int, finite float, str, list/tuple, dict with
    str keys), nested at most 8 deep with at most 10,000 items; else ``CheckpointError`` naming it."""
    budget = [_PLAIN_ITEMS] if budget is None else budget
    budget[0] -= 1
    if depth > _PLAIN_DEPTH or budget[0] < 0:
        raise CheckpointError(f"{path}: {name} is nested too deep or holds too many values")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"{path}: {name} = {value!r} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > _PLAIN_STR:
            raise CheckpointError(f"{path}: {name} is a string of {len(value)} characters (at most {_PLAIN_STR})")
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(check_plain(f"{name}[{i}]", v, path, depth + 1, budget) for i, v in enumerate(value))
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: {name} has a key {k!r} that is not a string")
        return {k: check_plain(f"{name}.{k}", v, path, depth + 1, budget) for k, v in value.items()}
    raise CheckpointError(f"{path}: {name} is a {type(value).__name__}; a stage's init_args hold plain values only")


def check_stage(kind: str, value, path, allowed: dict | None = None, trust: bool = False) -> dict:
    """One stage of a checkpoint's config as ``{"class_path", "init_args"}``, the class allowed by
    ``stages.registry.resolve`` (nothing is imported for a refused one), the arguments bounded."""
    from .stages import registry

    if isinstance(value, dict) and "class_path" in value:
        unknown = sorted(set(value) - {"class_path", "init_args"})
        if unknown:
            raise CheckpointError(f"{path}: unknown field(s) {unknown} in config.{kind} "
                                  "(a stage is {class_path, init_args})")
        try:
            cls = registry.resolve(kind, value["class_path"], trust)
        except registry.StageLookupError as e:
            raise CheckpointError(f"{path}: config.{kind}: {e}") from None
        args = value.get("init_args", {})
    else:  # before class paths: the built-in class's arguments
        cls, args = registry.default(kind), value
    if cls is registry.default(kind):
        return {"class_path": registry.class_path(cls), "init_args": check_section(kind, args, path, allowed)}
    if not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args):
        raise CheckpointError(f"{path}: config.{kind}.init_args must map argument names to values")
    args = check_plain(f"config.{kind}.init_args", args, path)
    if issubclass(cls, registry.default(kind)):  # a subclass: the built-in's fields keep their bounds
        known = {k: v for k, v in args.items() if k in LIMITS[kind]}
        args = {**args, **check_section(kind, known, path, allowed)}
    return {"class_path": registry.class_path(cls), "init_args": args}


def check_codec_config(config, path, allowed: dict | None = None, trust: bool = False) -> dict:
    """The ``config`` of a codec checkpoint, every field bounded (``allowed``: choices for codec/mask
    names that only the caller knows, e.g. ``{"coder": [...], "mask": [...]}``). Stage sections come
    back as ``{"class_path", "init_args"}`` (``check_stage``; ``trust``: any class path)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: 'config' must be a mapping, got {type(config).__name__}")
    missing = [s for s in ("tokenizer", "quantizer", "context_model") if s not in config]
    if missing:
        raise CheckpointError(f"{path}: config lacks {', '.join(missing)}")
    unknown = sorted(set(config) - set(LIMITS))
    if unknown:
        raise CheckpointError(f"{path}: unknown config section(s) {unknown}")
    return {s: check_stage(s, v, path, allowed, trust) if s in STAGES else check_section(s, v, path, allowed)
            for s, v in config.items()}


def check_state_dict(state, path, key: str = "state_dict") -> dict:
    """A mapping of parameter names to tensors, nothing else."""
    import torch

    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: '{key}' must be a mapping of names to tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: '{key}' entry {name!r} is a {type(value).__name__}, not a tensor")
    return state
