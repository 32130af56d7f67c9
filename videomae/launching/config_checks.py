"""Checks of a run's config against itself and against the model it builds; no data read, nothing started.

* ``model.name`` is registered (else the closest names), and the model builds on the ``meta`` device with
  ``model.overrides``, every argument in range (sizes and depths >= 1, widths divisible by heads, clip sides by
  patch and tubelet: :func:`videomae.models.arguments.check_model_arguments`, the models' own check), the key
  named;
* the clips the data gives are what the model takes (else its first forward fails): ``data.num_frames`` and any
  manifest's own ``num_frames`` are its ``all_frames``, ``data.input_size`` its ``img_size``, RGB its ``in_chans``;
* pretraining masks: ``mask.ratio`` hides at least one token and keeps one, counted as the training counts
  (:func:`videomae.masking.num_hidden`); the effective ratio is reported, with a warning when the rounding leaves
  the encoder noticeably more tokens than the ratio asks; the running-cell decoder mask fits the grid
  (:func:`videomae.masking.running_cell_mask`);
* a distillation teacher takes the data's clips (from our export's metadata, or ``distill.teacher_model`` built on
  the meta device);
* ``output_dir`` (or the nearest folder above it that exists) is a folder that takes a new file.

The launchers run :func:`config_findings` in ``--dry-run``; before a launch
:func:`videomae.launching.preflight.preflight_findings` runs them with the checks of the data and the machine.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Any

from videomae.config import ConfigError, FinetuneConfig
from videomae.launching.findings import Finding

# The model code is imported by the checks that need it (with timm, ~3 s per process).

__all__ = ["config_findings", "model_findings", "output_dir_finding"]

_MANIFEST_LISTS = ("manifests", "val_manifests", "test_manifests")
_RGB = 3  # every decoder and transform of videomae.data gives 3-channel clips
# The mask count is rounded down (as the original), so the encoder sees more tokens than the ratio asks: warn when
# that is more than 10% more. The released 0.9 on 14x14 patches (176 of 196 hidden, 20 seen for 19.6 asked) and the
# demo's 0.9 on 8x8 (57 of 64, 7 for 6.4) stay quiet; 0.99 on 8x8 (63 of 64, 1 for 0.64) warns.
_VISIBLE_SLACK = 0.10


def config_findings(cfg: Any) -> list[Finding]:
    """Every check above on a ``PretrainConfig`` or ``FinetuneConfig``: ``output_dir``, then the model's."""
    return [output_dir_finding(cfg.output_dir), *model_findings(cfg)]


def model_findings(cfg: Any) -> list[Finding]:
    """The model's name and arguments, then the clips, masks and teacher checked against the model it builds."""
    from videomae.launching.model_compat import meta_model
    from videomae.models import list_models

    name = cfg.model.name
    registered = list_models()
    if name not in registered:
        close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
        also = f" (also close: {', '.join(close[1:])})" if len(close) > 1 else ""
        hint = f"did you mean {close[0]}?{also}" if close else f"registered models: {', '.join(registered)}"
        return [Finding("model.name", False, f"{name!r} is not a registered model", hint)]
    finetune = isinstance(cfg, FinetuneConfig)
    findings = [Finding("model.name", True, name)]
    try:
        model = meta_model("finetune" if finetune else "pretrain", cfg)
    except ConfigError as err:
        key, _, text = str(err).partition(": ")
        fix = "drop or rename it" if key == "model.overrides" else f"set {key} as allowed"
        if key.startswith("model.overrides."):
            fix += ", or drop it to keep the registered model's own value"
        return findings + [Finding(key, False, text, fix)]
    except (RuntimeError, AssertionError) as err:  # sizes a layer refuses beyond the arguments check
        return findings + [Finding("model.overrides", False, str(err), "change the sizes")]
    findings.append(Finding("model.overrides", True, "the model builds"))
    findings += _clip_findings(cfg, model.model_config)
    if finetune:
        findings += _teacher_findings(cfg)
    elif hasattr(getattr(cfg, "mask", None), "decoder_type"):  # VideoMAE's dual masks (MoCo v3 has none, MAE-CLIP
        findings += _mask_findings(cfg.mask, model.grid_size)  # checks its own ratios in its config)
    return findings


# ---------------------------------------------------------------------------------------------------- clips


def _set_by(model_cfg: Any, argument: str) -> str:
    """Where the model's ``argument`` comes from, for messages."""
    if argument in model_cfg.overrides:
        return f"model.overrides.{argument}"
    return f"the default of {model_cfg.name}"


# (data key, model argument, the argument that must divide it, unit in messages)
_CLIP_SIDES = (("num_frames", "all_frames", "tubelet_size", "frames"), ("input_size", "img_size", "patch_size", "px"))


def _clip_findings(cfg: Any, args: dict[str, Any]) -> list[Finding]:
    """The data's clips ``[3, T, S, S]`` against the model's input ``(in_chans, all_frames, img_size)``."""
    m, d = cfg.model, cfg.data
    findings = []
    for key, argument, divisor, unit in _CLIP_SIDES:
        given, taken, step = getattr(d, key), args[argument], args[divisor]
        if given == taken:
            findings.append(Finding(f"data.{key}", True, f"{taken}, the model's {argument}"))
            continue
        detail = f"clips of {given} {unit}, but the model takes {taken} {unit} ({_set_by(m, argument)})"
        fix = f"set data.{key}={taken}, or "
        if given % step == 0:
            fix += f"model.overrides.{argument}={given} for a model on clips of {given} {unit}"
        else:
            fix += f"another multiple of the model's {divisor} ({step}) with model.overrides.{argument} set to it"
        findings.append(Finding(f"data.{key}", False, detail, fix))
    frames = args["all_frames"]
    for attr in _MANIFEST_LISTS:
        for i, src in enumerate(getattr(d, attr, [])):
            if src.num_frames is not None and src.num_frames != frames:
                detail = f"{src.num_frames}-frame clips from {src.path}, but the model takes {frames}"
                fix = "drop it (data.num_frames applies) or set it to the model's all_frames: one model, one shape"
                findings.append(Finding(f"data.{attr}[{i}].num_frames", False, detail, fix))
    if args["in_chans"] != _RGB:
        detail = f"the model takes {args['in_chans']} channels; the data gives RGB clips ({_RGB})"
        findings.append(Finding(_set_by(m, "in_chans"), False, detail, "drop model.overrides.in_chans"))
    return findings


# ---------------------------------------------------------------------------------------------------- masks


def _mask_findings(mask: Any, grid: tuple[int, int, int]) -> list[Finding]:
    """The encoder mask's count as the training draws it, and the decoder's running cells on this grid."""
    from videomae.masking import num_hidden, running_cell_mask

    steps, height, width = grid
    tokens, where = (height * width, "per frame") if mask.type == "tube" else (steps * height * width, "per clip")
    shape = f"{mask.type} mask on a {steps}x{height}x{width} token grid"
    findings = []
    try:
        hidden = num_hidden(tokens, mask.ratio)
    except ValueError as err:
        fix = f"a mask.ratio of at least {1 / tokens:.4g} (1 token of {tokens}), or a grid with more tokens"
        findings.append(Finding("mask.ratio", False, f"{shape}: {err}", fix))
    else:
        effective = hidden / tokens
        detail = f"{mask.ratio} hides {hidden} of {tokens} tokens {where} ({shape}): effective ratio {effective:.4g}"
        asked, seen = (1 - mask.ratio) * tokens, tokens - hidden  # visible tokens: what the encoder works on
        if seen - asked <= _VISIBLE_SLACK * asked:
            findings.append(Finding("mask.ratio", True, detail))
        else:
            detail += f"; the encoder sees {seen} of them, not the {asked:.3g} that {mask.ratio} asks for"
            fix = f"the run trains with {hidden}/{tokens}; a finer token grid realises {mask.ratio} more closely"
            findings.append(Finding("mask.ratio", True, detail, fix, warning=True))
    if mask.decoder_type == "run_cell":
        try:
            running_cell_mask(1, grid, mask.decoder_ratio)
        except ValueError as err:
            fix = "mask.decoder_type=none, or an even number of patches per side (data.input_size / patch size)"
            findings.append(Finding("mask.decoder_type", False, str(err), fix))
        else:
            findings.append(Finding("mask.decoder_type", True, f"run_cell drops {mask.decoder_ratio} of the tokens"))
    return findings


# ---------------------------------------------------------------------------------------------------- teacher


def _teacher_findings(cfg: FinetuneConfig) -> list[Finding]:
    """A distillation teacher that takes the data's clips.

    Nothing is reported when the teacher cannot be read here (the ``distill.teacher`` weights check says why).
    """
    k, d = cfg.distill, cfg.data
    if k.teacher is None:
        return []
    args = _teacher_arguments(k)
    if isinstance(args, Finding):
        return [args]
    frames, size = args.get("all_frames"), args.get("img_size")
    if frames is None or size is None:
        return []
    if (frames, size) == (d.num_frames, d.input_size):
        return [Finding("distill.teacher clips", True, f"the teacher takes {frames}-frame clips of {size} px")]
    detail = f"the teacher takes {frames}-frame clips of {size} px, the data gives {d.num_frames} x {d.input_size} px"
    fix = "a teacher trained on the student's clip shape, or data.num_frames / data.input_size (and the student's "
    fix += "model.overrides all_frames / img_size) set to the teacher's"
    return [Finding("distill.teacher clips", False, detail, fix)]


def _teacher_arguments(k: Any) -> dict[str, Any] | Finding:
    """The teacher's constructor arguments: ``distill.teacher_model`` built on the meta device, else our export's
    metadata (its header only); ``{}`` when unknown here, a failed :class:`Finding` when the model cannot build."""
    if k.teacher_model is None:
        from videomae.checkpoint import CheckpointError
        from videomae.inference.loading import _export_metadata

        try:
            return _export_metadata(k.teacher).get("model_config") or {}
        except CheckpointError:
            return {}
    import torch

    from videomae.models import create_model
    from videomae.models.arguments import ModelArgumentError

    try:
        with torch.device("meta"):
            return create_model(k.teacher_model, **k.teacher_overrides).model_config
    except ModelArgumentError as err:  # the registered values are in range: an override is not
        key = f"distill.teacher_overrides.{err.argument}"
        return Finding(key, False, str(err).partition(": ")[2], "set it as allowed, or drop it")
    except (ValueError, TypeError) as err:
        key = "distill.teacher_overrides" if isinstance(err, TypeError) else "distill.teacher_model"
        return Finding(key, False, str(err), "name a registered classifier and arguments it takes")


# ---------------------------------------------------------------------------------------------------- output_dir


def output_dir_finding(output_dir: str) -> Finding:
    """``output_dir`` is a folder that takes a new file, or can be made under the nearest folder that exists.

    Writability is tried (a temporary file made and removed), not read from permission bits: root passes
    ``os.access`` on a read-only mount, and ACLs or quotas are not in the bits.
    """
    target = Path(output_dir).absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    fix = "choose a folder this user can write, e.g. output_dir=runs/NAME"
    if not existing.is_dir():
        where = "is a file" if existing == target else f"cannot be made: {existing} is a file"
        return Finding("output_dir", False, f"{output_dir} {where}", fix)
    problem = _write_probe(existing)
    if problem:
        return Finding("output_dir", False, f"{output_dir}: cannot write in {existing}: {problem}", fix)
    state = "exists" if existing == target else f"will be made under {existing}"
    return Finding("output_dir", True, f"{output_dir} {state}, writable")


def _write_probe(folder: Path) -> str | None:
    """Why ``folder`` takes no new file (``None``: it does; the probe file is removed again)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".preflight-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return err.strerror or str(err)
    return None
