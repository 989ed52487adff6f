"""Stages by name, and the rule for which classes a checkpoint may name.

::

    @register("tokenizer", "patch")          # sets PatchTokenizer.name = "patch"
    class PatchTokenizer(nn.Module): ...     # any class with the members of protocols.Tokenizer

    get("tokenizer", "patch")  -> PatchTokenizer        names("tokenizer") -> ("conv", "patch")

Built-ins: tokenizer "conv", quantizers "vq" and "bsq" (``bsq.py``), context model "transformer", entropy coders
"constriction" and "torchac" (``entropy.CODERS`` *is* this registry's table of coders), detail
samplers "zero", "argmax", "mean", "sample", "copy" (factories of ``sampler.DetailSampler``).

Checkpoints name a stage's class by ``class_path`` (``module.Class``, LightningCLI's form). A file is
untrusted input and importing a module runs its code, so ``resolve`` accepts only

1. a class registered here (its module already ran: the built-ins, or a user's module that was
   imported and called ``register``),
2. a subclass of the kind's built-in class defined inside the ``progvc_lab`` package,
3. anything else only with ``trust=True`` (``Codec.load(path, trust_class_paths=True)``).

This module imports no other stage module (they import it to register themselves).
"""
from __future__ import annotations

import dataclasses
import importlib
import re

KINDS = ("tokenizer", "quantizer", "context_model", "entropy_coder", "detail_sampler")
DEFAULTS = {"tokenizer": "conv", "quantizer": "vq", "context_model": "transformer"}  # what old checkpoints mean
_LABELS = {"context_model": "context model", "entropy_coder": "entropy coder", "detail_sampler": "sampler"}
_TABLES: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}
_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class StageLookupError(ValueError):
    """A stage name or class_path that is unknown or not allowed; the message says how to allow it."""


def _kind(kind: str) -> str:
    if kind not in _TABLES:
        raise ValueError(f"unknown stage kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def class_path(obj) -> str:
    """``module.QualName`` of a class (or of an instance's class): what checkpoints store."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def register(kind: str, name: str):
    """Decorator: ``@register("quantizer", "bsq")`` puts a class (or factory) under ``name``.

    Sets ``obj.name = name`` (the stage's name in stream headers and reports). Registering the same
    class path again (a re-run notebook cell) replaces the entry; another object under a taken name
    is an error."""
    table = _TABLES[_kind(kind)]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ValueError(f"a stage name is 1-64 letters, digits, '_', '.' or '-', got {name!r}")

    def add(obj):
        old = table.get(name)
        if old is not None and old is not obj and not (isinstance(obj, type) and isinstance(old, type)
                                                       and class_path(old) == class_path(obj)):
            raise ValueError(f"{_LABELS.get(kind, kind)} name {name!r} is already registered "
                             f"({getattr(old, '__qualname__', old)!r}); pick another name")
        obj.name = name
        table[name] = obj
        return obj

    return add


def table(kind: str) -> dict:
    """The live name -> class table of one kind (``entropy.CODERS`` is the coders' one)."""
    return _TABLES[_kind(kind)]


def names(kind: str) -> tuple[str, ...]:
    """Registered names of one kind, in registration order (built-ins first)."""
    return tuple(_TABLES[_kind(kind)])


def get(kind: str, name: str):
    """The class (or factory) registered as ``name``; an unknown name lists the known ones."""
    table_ = _TABLES[_kind(kind)]
    if name not in table_:
        raise StageLookupError(f"unknown {_LABELS.get(kind, kind)} {name!r}; choose one of {', '.join(table_)}")
    return table_[name]


def default(kind: str):
    """The built-in class of a checkpointed kind (what a checkpoint without ``class_path`` means)."""
    return get(kind, DEFAULTS[kind])


def registered_class(kind: str, path: str):
    """The registered class of ``kind`` whose ``class_path`` is ``path``, or None."""
    return next((c for c in _TABLES[_kind(kind)].values() if isinstance(c, type) and class_path(c) == path), None)


def resolve(kind: str, path, trust: bool = False) -> type:
    """The class a checkpoint's ``class_path`` names, by the rule of the module docstring.

    Nothing is imported for a registered class; a module inside ``progvc_lab`` is imported only to
    look for a subclass of the built-in; any other module only with ``trust=True``."""
    if not isinstance(path, str) or len(path) > 200 or not _CLASS_PATH.match(path):
        raise StageLookupError(f"class_path must be a dotted name 'module.Class', got {str(path)[:80]!r}")
    found = registered_class(kind, path)
    if found is not None:
        return found
    label = _LABELS.get(kind, kind)
    ours = path.startswith("progvc_lab.")
    if not (ours or trust):
        raise StageLookupError(
            f"refused {label} class_path {path!r}: it is not a registered stage, and importing a module "
            f"that a file names runs its code. If you trust it, import that module and register the class "
            f"(progvc_lab.stages.registry.register({kind!r}, NAME)), or load with trust_class_paths=True (progvc-lab --trust-class-paths)")
    module, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except Exception as e:  # a trusted module may fail in any way: one line naming it
        raise StageLookupError(f"{label} class_path {path!r} cannot be loaded "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if not isinstance(cls, type):
        raise StageLookupError(f"refused {label} class_path {path!r}: it is a {type(cls).__name__}, not a class")
    base = default(kind) if kind in DEFAULTS else None
    if ours and not trust and base is not None and not issubclass(cls, base):
        raise StageLookupError(f"refused {label} class_path {path!r}: inside progvc_lab only subclasses of "
                               f"{class_path(base)} (or registered stages) load without trust_class_paths=True (progvc-lab --trust-class-paths)")
    from .protocols import missing

    lacks = missing(kind, cls)
    if lacks:
        raise StageLookupError(f"{label} class_path {path!r} is not a {label}: it lacks {', '.join(lacks)}")
    return cls


def expect_config(config, config_cls: type, owner) -> None:
    """A stage constructor's ``config`` argument: None or a ``config_cls``; anything else (a stage built
    with positional field values, as before configs were the argument) is a TypeError saying so.

    The config itself is built in each constructor, ``Cfg(**overrides) if config is None else
    dataclasses.replace(config, **overrides)``, not here: LightningCLI (jsonargparse) finds what a
    ``**overrides`` accepts by reading the constructor's body for a call that unpacks it, so a helper
    taking ``overrides`` as a dict would hide the fields from YAML ``init_args`` (tested in test_registry)."""
    if config is not None and not isinstance(config, config_cls):
        raise TypeError(f"{getattr(owner, '__name__', owner)}: config must be a {config_cls.__name__} or None, got "
                        f"{type(config).__name__} {config!r:.60}; pass the fields by name "
                        f"({', '.join(f.name + '=...' for f in dataclasses.fields(config_cls)[:2])}, ...)")


def init_args(stage) -> dict:
    """A stage's constructor arguments, from its ``config`` (a dataclass or a mapping)."""
    from collections.abc import Mapping

    cfg = getattr(stage, "config", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        # a field marked ``metadata={"omit_default": True}`` (an option added after models shipped) is
        # left out at its default, so those models keep their config, checkpoints and fingerprints
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                if not (f.metadata.get("omit_default") and getattr(cfg, f.name) == f.default)}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"{type(stage).__name__}.config must be a dataclass or a dict of its constructor's "
                    f"arguments (checkpoints rebuild the stage from it), got {type(cfg).__name__}")


def spec(stage) -> dict:
    """``{"class_path", "init_args"}`` of a stage instance: LightningCLI's form, what checkpoints store."""
    return {"class_path": class_path(stage), "init_args": init_args(stage)}


def build(kind: str, section, trust: bool = False):
    """A stage from a config section: ``{class_path, init_args}``, or (older checkpoints, hand-written
    configs) the built-in class's keyword arguments alone."""
    if isinstance(section, dict) and "class_path" in section:
        cls, args = resolve(kind, section["class_path"], trust), section.get("init_args") or {}
    else:
        cls, args = default(kind), section
    return cls(**args)
