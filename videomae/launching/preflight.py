"""Checks of a run's config against the machine, done before DeepSpeed starts: no process group, no data loop.

Every launch script runs :func:`preflight_findings` on every rank right after its config loads; when a check fails,
global rank 0 prints :func:`format_failures` (a few lines, each naming the key, file or line and the fix) and every
rank exits with status 2, before DeepSpeed is even imported. ``videomae doctor`` prints the same findings as a
PASS/FAIL table. The checks:

* each manifest of ``data.manifests`` (and ``data.val_manifests`` / ``data.test_manifests``) exists and parses
  (:func:`videomae.data.manifest.read_manifest`, with its line numbers); its ``data_root`` is a folder; the paths
  of up to ``sample_rows`` rows, spread evenly over the file, exist;
* label maps (``data.labels``, ``init_label_map``, ``distill.teacher_labels``) read;
* ``resume`` names a complete checkpoint, auto-resume would not continue a run started from other ``init`` weights;
  ``init`` and ``distill.teacher`` are readable weights (file headers only, never the whole tensors);
* the rendezvous port ``MASTER_PORT`` is free on this host (rank 0 only: it binds the port);
* then the checks of the config against itself and its model (:mod:`videomae.launching.config_checks`, also run by
  ``--dry-run``): ``output_dir`` takes a new file; ``model.name`` is registered and the model builds on the
  ``meta`` device with ``model.overrides`` in range; the data's clips are the model's; the masks fit its token
  grid (the effective ratio reported, a warning when rounding strays far); a distillation teacher takes the same
  clips.

Manifests are parsed whole, as the dataset will parse them again (about 9 s per million rows on a slow CPU); only
the path lookups are sampled, since on a network filesystem they are the slow part.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videomae.config import FinetuneConfig, ManifestSource
from videomae.data.manifest import ManifestError, read_label_map, read_manifest
from videomae.engine.checkpointing import find_resume_checkpoint
from videomae.engine.dist import resolve_env
from videomae.launching.config_checks import config_findings, model_findings, output_dir_finding
from videomae.launching.findings import Finding, format_failures

# The model code (videomae.models, videomae.checkpoint, videomae.launching.model_compat) is imported only by the
# checks that need it: with timm it takes ~3 s per process, more than every other check together.

__all__ = [
    "Finding",
    "dry_run_findings",
    "format_failures",
    "manifest_presence_findings",
    "port_finding",
    "preflight_findings",
]

_MANIFEST_LISTS = ("manifests", "val_manifests", "test_manifests")
_SHOWN_LINES = 3  # manifest problems quoted per manifest; `videomae manifest check` lists them all
_MISSING_MANIFEST_FIX = "give the path of an existing manifest (CSV with a header, see data_lists/SCHEMA.md)"
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a bare pickle (protocol >= 2)


def preflight_findings(
    cfg: Any, *, sample_rows: int = 64, check_port: bool = True, eval_only: bool = False, quick: bool = False
) -> list[Finding]:
    """Run every check on a loaded pretraining or fine-tuning config; passed checks are included.

    Args:
        cfg: a ``PretrainConfig`` or ``FinetuneConfig``.
        sample_rows: rows per manifest whose paths are looked up (spread over the file, the same on every rank).
        check_port: bind ``MASTER_PORT`` to see that it is free; only the process that will bind it (global rank
            0, on the master host) should.
        eval_only: a ``--eval-only`` run, which needs no training manifests.
        quick: when another check failed, leave the model out (its import is the slow part), so a launch that
            fails anyway stops sooner; ``model.name`` is then reported as not checked.

    Returns:
        One :class:`Finding` per check: data, label maps, output_dir, resume and weights, port, then the model.
    """
    findings = _manifest_findings(cfg, sample_rows, eval_only)
    findings += _label_map_findings(cfg)
    findings.append(output_dir_finding(cfg.output_dir))
    findings += _weights_findings(cfg)
    if check_port:
        findings.append(port_finding(os.environ))
    if quick and not all(f.ok for f in findings):
        return findings + [Finding("model.name", True, "not checked: the problems above come first")]
    return findings + model_findings(cfg)


# ---------------------------------------------------------------------------------------------------- data


def dry_run_findings(cfg: Any, eval_only: bool = False) -> list[Finding]:
    """The checks of ``--dry-run`` (launch scripts and stages alike): the manifests are listed and exist, then the
    config against itself and its model (:func:`videomae.launching.config_checks.config_findings`)."""
    return manifest_presence_findings(cfg, eval_only) + config_findings(cfg)


def manifest_presence_findings(cfg: Any, eval_only: bool = False) -> list[Finding]:
    """The data checks of ``--dry-run``: ``data.manifests`` names at least one manifest (not needed by ``eval_only``)
    and every listed manifest file exists; nothing is parsed (the full checks run at launch)."""
    findings = _no_manifests(cfg, eval_only)
    for key, src in _listed_manifests(cfg):
        if not Path(src.path).is_file():
            what = "is not a file" if Path(src.path).exists() else "does not exist"
            findings.append(Finding(key, False, f"{src.path} {what}{_relative_note(src.path)}", _MISSING_MANIFEST_FIX))
    return findings


def _no_manifests(cfg: Any, eval_only: bool) -> list[Finding]:
    if cfg.data.manifests or eval_only:
        return []
    return [Finding("data.manifests", False, "empty", "list at least one manifest: data.manifests=[a.csv]")]


def _listed_manifests(cfg: Any) -> list[tuple[str, ManifestSource]]:
    """``(config key, source)`` of every manifest the config lists: training, validation, test."""
    return [(f"data.{attr}[{i}]", src) for attr in _MANIFEST_LISTS for i, src in enumerate(getattr(cfg.data, attr, []))]


def _manifest_findings(cfg: Any, sample_rows: int, eval_only: bool) -> list[Finding]:
    data = cfg.data
    findings = _no_manifests(cfg, eval_only)
    roots: dict[tuple[str, str], Finding] = {}  # one finding per data_root key and folder, however many share it
    for key, src in _listed_manifests(cfg):
        root_key, root = (f"{key}.data_root", src.data_root) if src.data_root else ("data.data_root", data.data_root)
        root_ok = True
        if root is not None:
            found = roots.setdefault((root_key, root), _root_finding(root_key, root))
            root_ok = found.ok
        findings += _one_manifest(key, src, root, sample_rows if root_ok else 0)
    return list(roots.values()) + findings


def _root_finding(key: str, root: str) -> Finding:
    if Path(root).is_dir():
        return Finding(key, True, f"{root} is a folder")
    what = "is not a folder" if Path(root).exists() else "does not exist"
    return Finding(
        key,
        False,
        f"{root} {what}{_relative_note(root)}",
        f"set {key} to the folder the manifest paths are relative to",
    )


def _one_manifest(key: str, src: ManifestSource, root: str | None, sample_rows: int) -> list[Finding]:
    """The manifest's parse finding, then (when it parsed and ``sample_rows > 0``) its sampled paths' finding."""
    try:
        manifest = read_manifest(src.path, root)
    except ManifestError as err:
        return [Finding(key, False, _manifest_problem(err), _manifest_fix(err))]
    except OSError as err:
        return [Finding(key, False, f"{src.path}: {err.strerror or err}", "make the file readable")]
    findings = [Finding(key, True, f"{src.path}: {len(manifest)} rows ({manifest.format})")]
    if sample_rows <= 0:
        return findings
    rows = manifest.rows
    picks = _spread(len(rows), sample_rows)
    missing = [rows[j] for j in picks if not os.path.exists(rows[j].path)]
    if not missing:
        return findings + [Finding(f"{key} paths", True, f"{len(picks)} sampled rows of {src.path} exist")]
    first = missing[0]
    root_text = f"data_root {root}" if root else f"no data_root: relative to the working directory {os.getcwd()}"
    detail = (
        f"{len(missing)} of {len(picks)} sampled rows name no file, e.g. {first.manifest}:{first.line}: {first.path}"
    )
    fix = f"check the paths and the data_root they are joined to ({root_text}); every row: videomae manifest check "
    fix += src.path + (f" --data-root {root}" if root else "")
    return findings + [Finding(f"{key} paths", False, detail, fix)]


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` distinct indices of ``range(n)`` spread evenly from the first to the last."""
    k = min(n, k)
    return [round(j * (n - 1) / (k - 1)) for j in range(k)] if k > 1 else list(range(k))


def _relative_note(path: str | os.PathLike) -> str:
    return "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"


def _manifest_problem(err: ManifestError) -> str:
    if err.errors == [(0, "file not found")]:
        return f"{err.file}: file not found{_relative_note(err.file)}"
    shown = [f"{err.file}:{line}: {reason}" if line else f"{err.file}: {reason}" for line, reason in err.errors]
    more = len(shown) - _SHOWN_LINES
    return "\n".join(shown[:_SHOWN_LINES] + ([f"... and {more} more"] if more > 0 else []))


def _manifest_fix(err: ManifestError) -> str:
    if err.errors == [(0, "file not found")]:
        return _MISSING_MANIFEST_FIX
    return f"correct the lines above (data_lists/SCHEMA.md); all problems: videomae manifest check {err.file}"


def _label_map_findings(cfg: Any) -> list[Finding]:
    """Label maps of a fine-tuning config: ``data.labels``, a file ``init_label_map``, ``distill.teacher_labels``."""
    if not isinstance(cfg, FinetuneConfig):
        return []
    files = {"data.labels": cfg.data.labels, "distill.teacher_labels": cfg.distill.teacher_labels}
    if cfg.init_label_map not in ("auto", "fresh", "keep"):
        files["init_label_map"] = cfg.init_label_map
    findings = []
    for key, path in files.items():
        if path is None:
            continue
        try:
            names = read_label_map(path)
        except (OSError, ManifestError, UnicodeDecodeError) as err:
            reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
            findings.append(Finding(key, False, f"{path}: {reason}", "give a labels.txt with one class name per line"))
        else:
            findings.append(Finding(key, True, f"{path}: {len(names)} classes"))
    return findings


# ---------------------------------------------------------------------------------------------------- files


def _weights_findings(cfg: Any) -> list[Finding]:
    """``resume`` (and what auto-resume would continue), ``init`` (unless a checkpoint replaces it),
    ``distill.teacher``."""
    try:
        resumed = find_resume_checkpoint(cfg, Path(cfg.output_dir) / "checkpoints")
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        fix = "point resume at a checkpoint folder (step_N with its COMMITTED file), or resume=auto / never"
        if isinstance(err, RuntimeError):
            fix = "use a new output_dir, or resume=never to start afresh from init"
        findings = [Finding("resume", False, str(err), fix)]
        resumed = None
    else:
        findings = [Finding("resume", True, f"continues {resumed.path}" if resumed else "fresh start")]
    weights = {"init": cfg.init if resumed is None else None}
    if isinstance(cfg, FinetuneConfig):
        weights["distill.teacher"] = cfg.distill.teacher
    for key, path in weights.items():
        if path is None:
            continue
        problem = _weights_problem(Path(path))
        if problem:
            fix = "give our .safetensors export, a release .pth or a transformers folder"
            findings.append(Finding(key, False, f"{path}: {problem}", fix))
        else:
            findings.append(Finding(key, True, f"{path} is readable"))
    return findings


def _weights_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as weights by :func:`videomae.checkpoint.read_checkpoint` (None: it can), from
    the folder layout and file headers only."""
    from videomae.checkpoint import HF_INDEX_FILES, HF_WEIGHT_FILES, PICKLE_SUFFIXES

    if not path.exists():
        return "does not exist" + _relative_note(path)
    if path.is_dir():
        for name in HF_WEIGHT_FILES + HF_INDEX_FILES:
            if (path / name).is_file():
                problem = _json_problem(path / name) if name.endswith(".json") else _weights_problem(path / name)
                return problem and f"{name}: {problem}"
        return f"folder without {', '.join(HF_WEIGHT_FILES + HF_INDEX_FILES)}"
    try:
        if path.suffix == ".safetensors":
            return _safetensors_problem(path)
        if path.suffix in PICKLE_SUFFIXES:
            with open(path, "rb") as f:
                head = f.read(4)
            if not head.startswith(_PICKLE_MAGIC):
                return "not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)"
            return _unsafe_pickle_problem(path)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    return f"unknown weights type {path.suffix!r} (use {', '.join(PICKLE_SUFFIXES)}, .safetensors or a folder)"


def _unsafe_pickle_problem(path: Path) -> str | None:
    """Why the weights-only unpickling the run will do refuses ``path`` (None: it accepts it)."""
    from videomae.checkpoint import CheckpointError, refuse_unsafe_pickle

    try:
        refuse_unsafe_pickle(path)
    except CheckpointError as err:
        return str(err).removeprefix(f"{path}: ")
    except Exception as err:  # noqa: BLE001 - a damaged archive: the run would fail on it too
        return f"not readable by torch.load: {str(err).splitlines()[0]}"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file starts with an 8-byte little-endian header length and that many bytes of JSON."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 2 <= size <= min(path.stat().st_size - 8, 100_000_000):
            return "not a safetensors file (bad header length)"
        try:
            json.loads(f.read(size))
        except ValueError:
            return "not a safetensors file (its header is not JSON)"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return f"{path.name} unreadable: {err}"
    return None


# ---------------------------------------------------------------------------------------------------- port


def port_finding(environ: Mapping[str, str]) -> Finding:
    """Whether this host can bind the rendezvous port (``MASTER_PORT``), as global rank 0 will.

    Not checked under ``torchrun`` (its agent already holds the port), for one process without ``MASTER_PORT``
    (it picks a free one) and when ``MASTER_ADDR`` is another host.
    """
    if "TORCHELASTIC_RUN_ID" in environ:
        return Finding("MASTER_PORT", True, "not checked: torchrun's agent holds the rendezvous port")
    env = resolve_env(environ)
    if env.world_size == 1 and "MASTER_PORT" not in environ:
        return Finding("MASTER_PORT", True, "not needed: one process picks a free port")
    port, addr = env.master_port, env.master_addr
    try:
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        fix = "set MASTER_ADDR to this host's name or address"
        return Finding("MASTER_ADDR", False, f"{addr} does not resolve ({err.strerror})", fix)
    wildcard = "::" if family == socket.AF_INET6 else ""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((addr, 0))
        except OSError:
            return Finding("MASTER_PORT", True, f"not checked: MASTER_ADDR {addr} is another host")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as torch's TCPStore does: a port left in TIME_WAIT by a finished run is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((wildcard, port))
        except OSError as err:
            taken = "is taken (another run on this host?)" if err.errno == errno.EADDRINUSE else err.strerror
            return Finding("MASTER_PORT", False, f"port {port} on {addr} {taken}", _port_fix(wildcard, family))
    return Finding("MASTER_PORT", True, f"port {port} on {addr} is free")


def _port_fix(wildcard: str, family: int) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((wildcard, 0))
        free = probe.getsockname()[1]
    return (
        f"pick another port (e.g. {free}, free now): deepspeed --master_port {free} ..., torchrun --master-port "
        f"{free} ..., or MASTER_PORT={free} for srun/sbatch"
    )
