"""``progvc-lab train STAGE ...``: LightningCLI over the two stages.

    progvc-lab train stage1 --config configs/tiny_stage1.yaml
    progvc-lab train stage2 --config configs/tiny_stage2.yaml
    progvc-lab train stage1 --config configs/tiny_stage1.yaml --ckpt_path runs/tiny/stage1/last.ckpt  # resume

Everything after the stage name goes to LightningCLI (``--print_config`` shows every option; any
``--trainer.*``, ``--model.*`` or ``--data.*`` value can be overridden on the command line).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from ..data.datamodule import VideoDataModule
from .modules import ContextModule, TokenizerModule

STAGES = {"stage1": TokenizerModule, "stage2": ContextModule}


def _shipped_configs(args: list[str]) -> list[str]:
    """``--config NAME`` that is not a file here but names a shipped config (``tiny_stage1``,
    ``configs/tiny_stage1.yaml``): use the shipped one, so an installed package trains from any folder."""
    from ..resources import shipped_config, shipped_configs

    out = list(args)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            j, value, prefix = i + 1, out[i + 1], ""
        elif a.startswith("--config="):
            j, value, prefix = i, a.split("=", 1)[1], "--config="
        else:
            continue
        if Path(value).exists():
            continue
        found = shipped_config(value)
        if found is None:
            raise FileNotFoundError(f"{value}: no such config file, and no shipped config of that name "
                                    f"(shipped: {', '.join(shipped_configs())})")
        print(f"progvc-lab: note: {value} is not a file here; using the shipped config {found}", file=sys.stderr)
        out[j] = prefix + str(found)
    return out


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        print(f"usage: progvc-lab train {{{','.join(STAGES)}}} --config CONFIG.yaml [LightningCLI options]",
              file=sys.stderr)
        return 2
    stage, rest = argv[0], _shipped_configs(argv[1:])
    if not any(a in ("fit", "validate", "test") for a in rest[:1]):
        rest = ["fit"] + rest
    # a resumed run reads its checkpoint with weights_only=True (tensors and plain values, never
    # pickled objects); pass --weights_only false yourself only for a file you made and trust
    if any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in rest) and \
            not any(a.startswith("--weights_only") for a in rest):
        rest = rest + ["--weights_only", "true"]
    LightningCLI(STAGES[stage], VideoDataModule, args=rest, save_config_kwargs={"overwrite": True},
                 subclass_mode_model=False, subclass_mode_data=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
