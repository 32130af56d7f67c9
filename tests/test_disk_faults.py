"""Writes the storage refuses are named (no space left, quota, read-only, file-size limit), a failed checkpoint
leaves the last committed one in charge and a failed export leaves no partial file. Real faults where a process
can make them: the file-size limit (``RLIMIT_FSIZE`` in a child process, ``SIGXFSZ`` ignored so writes fail with
``EFBIG``); a full disk and a read-only mount through ``os.statvfs`` as the storage reports them."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fake_engines import TorchSavingEngine, TorchWriter, save_torch_checkpoint

from videomae import disk_faults
from videomae.disk_faults import DiskWriteError, name_write_fault, write_atomic
from videomae.engine import checkpointing as ckpt

ROOT = Path(__file__).resolve().parents[1]


def run_limited(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python whose files may grow to ``limit`` bytes (writes past it fail with EFBIG)."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


class _Statvfs:
    """What ``os.statvfs`` reports for a 256 KiB file system with ``free`` bytes available."""

    def __init__(self, free: int, read_only: bool = False) -> None:
        self.f_frsize, self.f_blocks, self.f_bavail = 4096, 64, free // 4096
        self.f_flag = os.ST_RDONLY if read_only else 0


def _two_causes_down(code: int) -> RuntimeError:
    """A writer's error whose cause's cause is the OSError with ``code``."""
    try:
        try:
            raise OSError(code, os.strerror(code))
        except OSError as inner:
            raise ValueError("flush failed") from inner
    except ValueError as middle:
        error = RuntimeError("write failed")
        error.__cause__ = middle
        return error


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on {}"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded on {}"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system: {}"),
        # safetensors' wording, and an errno two causes down
        (
            RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
            "no space left on {}",
        ),
        (_two_causes_down(errno.EDQUOT), "disk quota exceeded on {}"),
    ],
)
def test_an_errno_in_the_error_or_its_causes_names_the_cause(tmp_path, error, cause):
    target = tmp_path / "run" / "model.pt"
    fault = name_write_fault(target, error)
    assert isinstance(fault, DiskWriteError) and str(fault).startswith(cause.format(target))


def test_the_storage_says_why_when_the_writer_hides_it(tmp_path, monkeypatch):
    hidden = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5504 vs 5396")
    target = tmp_path / "model.pt"
    assert name_write_fault(target, hidden) is None  # plenty of space, writable: not a disk fault
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(free=0))
    fault = name_write_fault(target, hidden)
    assert fault.errno == errno.ENOSPC
    assert str(fault).startswith(f"no space left on {target} (0 bytes free of 256.0 KiB) [RuntimeError: [enforce")
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(free=1 << 30, read_only=True))
    assert str(name_write_fault(target, hidden)).startswith(f"read-only file system: {target}")


def test_a_quota_is_found_by_a_probe_write(tmp_path, monkeypatch):
    def refuse(fd, data):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(disk_faults.os, "write", refuse)  # the probe's write; free space looks fine
    fault = name_write_fault(tmp_path / "model.pt", RuntimeError("basic_ios::clear: iostream error"))
    monkeypatch.undo()
    assert fault.errno == errno.EDQUOT and str(fault).startswith(f"disk quota exceeded on {tmp_path / 'model.pt'}")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_torch_zip_writer_at_the_file_size_limit_is_named(tmp_path):
    target = tmp_path / "big.pt"
    result = run_limited(f"""
        import torch
        from videomae.disk_faults import name_write_fault
        try:
            torch.save({{"w": torch.zeros(100_000)}}, {str(target)!r})
        except RuntimeError as err:
            print("RAISED", err)
            print("NAMED", name_write_fault({str(target)!r}, err))
    """, limit=64 * 1024)  # fmt: skip
    assert "RAISED" in result.stdout and "unexpected pos" in result.stdout, result.stderr  # what torch says
    named = result.stdout.split("NAMED ", 1)[1]
    assert named.startswith(f"file size limit reached writing {target} (this process may write files of at most "
                            "64.0 KiB: `ulimit -f`)")  # fmt: skip


def test_write_atomic_keeps_the_old_file_and_leaves_no_partial_one(tmp_path):
    target = tmp_path / "export" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"the previous export")

    def fill_the_disk(tmp: str) -> None:
        Path(tmp).write_bytes(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskWriteError, match=r"^no space left on .*model\.safetensors\.partial"):
        write_atomic(target, fill_the_disk)
    assert target.read_bytes() == b"the previous export" and sorted(target.parent.iterdir()) == [target]


def test_export_at_the_file_size_limit_is_named_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.safetensors"
    result = run_limited(f"""
        from videomae.checkpoint import export_weights
        from videomae.disk_faults import DiskWriteError
        from videomae.models import create_model
        try:
            export_weights(create_model("vit_tiny_patch16_224", num_classes=3), {str(target)!r})
        except DiskWriteError as err:
            print("NAMED", err)
    """, limit=64 * 1024)  # fmt: skip
    assert f"NAMED file size limit reached writing {target}.partial" in result.stdout, result.stderr
    assert "File too large (os error 27)" in result.stdout  # safetensors' own words, kept after the cause
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    save_torch_checkpoint(root, 2, TorchSavingEngine(10))
    engine = TorchSavingEngine(10)
    real_save = TorchWriter.save

    def full(self, state_dict, path):  # a partial file, then the zip writer's complaint; statvfs: disk full
        Path(path).write_bytes(b"partial")
        monkeypatch.setattr(os, "statvfs", lambda p: _Statvfs(free=0))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5504 vs 5396")

    monkeypatch.setattr(TorchWriter, "save", full)
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        save_torch_checkpoint(root, 4, engine)
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"saving checkpoint {root / 'step_00000004'} failed: rank 0: no space left on "
                              f"{root / 'step_00000004.tmp' / 'mp_rank_00_model_states.pt'} (0 bytes free")  # fmt: skip
    assert f"The last committed checkpoint {root / 'step_00000002'} is kept; rerun to resume from it" in message
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]  # the partial folder is gone
    assert (root / "latest").read_text() == "step_00000002" and ckpt.find_latest(root).step == 2
    assert engine.checkpoint_engine.save.__func__ is real_save  # DeepSpeed's writer is itself again


def test_a_real_file_size_fault_during_a_save_keeps_the_last_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    code = f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from fake_engines import TorchSavingEngine, save_torch_checkpoint
        from videomae.engine.checkpointing import CheckpointWriteError
        root = Path({str(root)!r})
        save_torch_checkpoint(root, 2, TorchSavingEngine(100))  # ~1 KiB files
        try:
            save_torch_checkpoint(root, 4, TorchSavingEngine(100_000))  # 400 KB of weights: past the limit
        except CheckpointWriteError as err:
            print(err)
            sys.exit(1)
    """
    result = run_limited(code, limit=64 * 1024)
    assert result.returncode == 1, result.stderr
    model_file = root / "step_00000004.tmp" / "mp_rank_00_model_states.pt"
    assert f"rank 0: file size limit reached writing {model_file}" in result.stdout
    assert ckpt.find_latest(root).step == 2 and not (root / "step_00000004.tmp").exists()
    assert json.loads((root / "step_00000002" / ckpt.COMMIT_FILE).read_text())["step"] == 2
    assert torch.load(root / "step_00000002" / "mp_rank_00_model_states.pt")["step"] == 2  # still loads


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_exports_take_the_mode_the_umask_gives(tmp_path, umask):
    """safetensors stages through a private 0600 file; our exports (and transformers folders) follow the umask."""
    from videomae.checkpoint import export_weights
    from videomae.hf_folder import write_hf_folder
    from videomae.models import create_model

    model = create_model("vit_tiny_patch16_224", num_classes=3)
    old = os.umask(umask)
    try:
        assert disk_faults.process_umask() == umask
        ours = export_weights(model, tmp_path / "model.safetensors")
        hf = write_hf_folder(model, tmp_path / "hf") / "model.safetensors"
    finally:
        os.umask(old)
    for path in (ours, hf):
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask), path
