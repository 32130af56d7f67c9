"""What ``videomae probe`` probes: any checkpoint, described before it is loaded.

A probe's features are cached under a key that includes what fixes the weights, so that a second probe of the same
weights never builds the model. :func:`resolve_probe_model` therefore says, from cheap reads only, which model a
checkpoint holds (name and constructor arguments, the run's config) and a digest of its weights; the weights are
loaded by :meth:`ProbeModel.load` only when features must be computed.

Checkpoints: our safetensors export (of any method: its metadata names the registered model); a run folder (its
``export/model.safetensors``, else its newest complete checkpoint consolidated once into ``exports/`` of the cache,
as ``videomae export`` does) or a checkpoint folder; a release ``.pth`` or state dict (with ``model_name``); a
``transformers`` folder (read whole to know its model); ``random:NAME`` (a registered model, initialised from
``seed``) or ``random:EXPORT`` (a random model of that export's shape): the baseline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videomae.checkpoint import CheckpointError
from videomae.evaluation.probes import model_frames
from videomae.hf_folder import is_hf_folder
from videomae.inference.feature_runs import weights_digest
from videomae.inference.loading import InferenceModel, export_metadata, load_inference_model, run_setting
from videomae.models import create_model

__all__ = ["RANDOM_PREFIX", "ModelShape", "ProbeModel", "describe", "resolve_probe_model"]

RANDOM_PREFIX = "random:"
RUN_EXPORT = Path("export") / "model.safetensors"
"""Where a run writes its export when it finishes."""
FEATURE_KEYS = ("head.", "fc_norm.")
"""Keys a classifier built from pretraining weights may lack: features never use them."""


@dataclass(frozen=True)
class ModelShape:
    """What the clips must look like for a model, and how its tokens are laid out."""

    num_frames: int
    input_size: int
    num_patches: int


@dataclass
class ProbeModel:
    """A checkpoint resolved without loading its weights.

    Attributes:
        spec: the checkpoint as given.
        kind: ``export``, ``checkpoint`` (consolidated into an export), ``pretrained`` (a file read by
            ``load_pretrained`` into ``model_name``), ``transformers`` or ``random``.
        path: the file or folder the weights come from (``None`` for ``random``).
        model_name: the registered model.
        model_kwargs: its constructor arguments.
        metadata: the export's metadata (the training run's ``config`` among it), ``{}`` when there is none.
        identity: what fixes the weights (a digest of the files, or the random model's name, arguments and seed).
        seed: the seed a ``random`` model is initialised from.
    """

    spec: str
    kind: str
    path: Path | None
    model_name: str
    model_kwargs: dict[str, Any]
    metadata: dict[str, Any]
    identity: dict[str, Any]
    seed: int = 0
    _loaded: nn.Module | None = field(default=None, repr=False)

    def shape(self) -> ModelShape:
        """Frames, input size and patch count, from the model built on the ``meta`` device (no memory, no data)."""
        if self._loaded is not None:
            return _shape_of(self._loaded)
        with torch.device("meta"):
            return _shape_of(create_model(self.model_name, **self.model_kwargs))

    def run_setting(self, key: str, section: str = "data") -> Any:
        """``<section>.<key>`` of the training run's config (``None`` when unknown)."""
        return run_setting(self.metadata, key, section)

    def load(self, device: torch.device | str = "cpu", precision: str = "fp32") -> InferenceModel:
        """The model in eval mode with its weights."""
        if self.kind == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = create_model(self.model_name, **self.model_kwargs)
            return InferenceModel(model.to(device).eval(), {}, self.spec, precision)
        if self._loaded is not None:
            return InferenceModel(self._loaded.to(device).eval(), self.metadata, self.spec, precision)
        by_name = self.kind == "pretrained"
        return load_inference_model(
            self.path,
            model_name=self.model_name if by_name else None,
            overrides=self.model_kwargs if by_name else None,
            allow_missing=FEATURE_KEYS,
            device=device,
            precision=precision,
        )


def _shape_of(model: nn.Module) -> ModelShape:
    trunk = model.encoder if hasattr(model, "forward_encoder") else model
    embed = trunk.patch_embed
    return ModelShape(model_frames(model), int(embed.img_size), int(embed.num_patches))


def _digest_folder(folder: Path) -> str:
    """sha256 over every file of a checkpoint folder (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _from_export(spec: str, path: Path, kind: str = "export") -> ProbeModel:
    metadata = export_metadata(path)
    config = dict(metadata.get("model_config") or {})
    name = config.pop("name", None)
    if not name:
        raise CheckpointError(f"{path}: not a videomae export (no model_config in its metadata); name the model "
                              "with --model NAME for other checkpoints")  # fmt: skip
    return ProbeModel(spec, kind, path, name, config, metadata, {"sha256": weights_digest(path)})


def _consolidated(spec: str, folder: Path, exports: Path) -> ProbeModel:
    """A run's newest complete checkpoint (or a checkpoint folder), consolidated once into ``exports/``."""
    from videomae.engine.export import export_checkpoint, find_checkpoint

    info = find_checkpoint(folder)
    digest = _digest_folder(info.path)
    out = exports / f"{digest[:16]}.safetensors"
    if not out.is_file():
        export_checkpoint(info.path, out)
    probe = _from_export(spec, out, kind="checkpoint")
    probe.identity = {"checkpoint_sha256": digest}
    probe.metadata["source_checkpoint"] = str(info.path)
    return probe


def _random(spec: str, target: str, overrides: dict[str, Any], seed: int) -> ProbeModel:
    if Path(target).is_file():  # random:EXPORT: a fresh model of that export's shape
        config = dict(export_metadata(target).get("model_config") or {})
        if not config.get("name"):
            raise CheckpointError(f"{spec}: {target} is not a videomae export; write random:MODEL_NAME")
        name = config.pop("name")
        kwargs = {**config, **overrides}
    else:
        name, kwargs = target, dict(overrides)
    try:
        with torch.device("meta"):
            create_model(name, **kwargs)
    except (TypeError, ValueError) as err:  # an unknown name lists the registered ones
        raise CheckpointError(f"{spec}: {err}") from None
    identity = {"random": name, "kwargs": kwargs, "seed": seed, "torch": torch.__version__}
    return ProbeModel(spec, "random", None, name, kwargs, {}, identity, seed)


def resolve_probe_model(
    spec: str | Path,
    *,
    model_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    exports: str | Path | None = None,
) -> ProbeModel:
    """Describe the checkpoint ``spec`` (see the module docstring) without loading its weights.

    Args:
        model_name: registered model for a checkpoint without our metadata (a release ``.pth``, a state dict).
        overrides: constructor arguments of ``model_name`` (or of the ``random:`` model).
        seed: initialisation seed of a ``random:`` model.
        exports: folder for the consolidated export of a run without one (required for such a run).

    Raises:
        CheckpointError: a path that does not exist, a file that is not ours without ``model_name``, an unknown
            model name; FileNotFoundError: a folder with no export and no complete checkpoint.
    """
    spec = str(spec)
    overrides = dict(overrides or {})
    if spec.startswith(RANDOM_PREFIX):
        return _random(spec, spec[len(RANDOM_PREFIX) :], overrides, seed)
    path = Path(spec)
    if not path.exists():
        raise CheckpointError(f"checkpoint {spec} does not exist (expected our .safetensors export, a run or "
                              f"checkpoint folder, a release .pth with --model, a transformers folder, or "
                              f"{RANDOM_PREFIX}MODEL_NAME)")  # fmt: skip
    if model_name is not None:
        try:
            with torch.device("meta"):
                create_model(model_name, **overrides)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"--model {model_name}: {err}") from None
        identity = {"sha256": weights_digest(path), "model": model_name, "kwargs": overrides}
        return ProbeModel(spec, "pretrained", path, model_name, overrides, export_metadata(path), identity)
    if overrides:
        raise CheckpointError("--override needs --model (an export or a run rebuilds its own model)")
    if path.is_file():
        return _from_export(spec, path)
    if is_hf_folder(path):
        loaded = load_inference_model(path)
        config = dict(loaded.model.model_config)
        identity = {"sha256": weights_digest(path), "config_sha256": weights_digest(path / "config.json")}
        probe = ProbeModel(spec, "transformers", path, config.pop("name"), config, loaded.metadata, identity)
        probe._loaded = loaded.model
        return probe
    if (path / RUN_EXPORT).is_file():
        return _from_export(spec, path / RUN_EXPORT)
    if exports is None:
        raise CheckpointError(f"{spec}: a run without an export; give a folder for its consolidated export")
    return _consolidated(spec, path, Path(exports))


def describe(probe: ProbeModel) -> dict[str, Any]:
    """The probe model as the report records it."""
    return {"checkpoint": probe.spec, "kind": probe.kind, "model": probe.model_name, "model_kwargs":
            probe.model_kwargs, "weights": probe.identity}  # fmt: skip
