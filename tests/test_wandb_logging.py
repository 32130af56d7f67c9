"""``logging.wandb``: refused with the fix where wandb is not installed, before anything starts; with the real library
(offline), the same scalars as ``metrics.jsonl`` and the pictures, under the run folder, one wandb run across a
resume."""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_helpers import FINETUNE_DEMO_YAML, PRETRAIN_DEMO_YAML, ROOT

from videomae.config import ConfigError, LoggingConfig, load_config, load_finetune_config
from videomae.config import sections as config_sections
from videomae.engine.logging_utils import MetricsWriter, Picture

PRETRAIN_DEMO, FINETUNE_DEMO = PRETRAIN_DEMO_YAML, FINETUNE_DEMO_YAML


@pytest.fixture
def without_wandb(monkeypatch):
    """This Python as one without wandb installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(config_sections.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else
                        real(name, *a))  # fmt: skip


def test_wandb_off_by_default_and_refused_when_missing(without_wandb, tmp_path, capsys):
    assert load_config(PRETRAIN_DEMO).logging == LoggingConfig(wandb=False, wandb_project="videomae")
    assert load_finetune_config(FINETUNE_DEMO).logging.wandb is False
    for load, path in [(load_config, PRETRAIN_DEMO), (load_finetune_config, FINETUNE_DEMO)]:
        with pytest.raises(ConfigError, match=r"logging.wandb: true needs `pip install wandb`"):
            load(path, ["logging.wandb=true"])
    spec = importlib.util.spec_from_file_location("launch_pretrain", ROOT / "launch/pretrain.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    out = tmp_path / "never"
    assert launch.main(["--config", str(PRETRAIN_DEMO), f"output_dir={out}", "logging.wandb=true"]) == 2
    err = capsys.readouterr().err
    assert "config error: logging.wandb: true needs `pip install wandb`" in err and "logging.wandb=false" in err
    assert not out.exists()  # refused at load: no process group, no run folder
    with pytest.raises(ConfigError, match="logging.wandb_typo: unknown key"):
        load_config(PRETRAIN_DEMO, ["logging.wandb_typo=true"])


def test_without_wandb_nothing_of_it_is_written(tmp_path):
    writer = MetricsWriter(tmp_path, enabled=True, tensorboard=False, sinks=LoggingConfig())
    writer.write(1, {"loss": 1.0})
    writer.close()
    assert not (tmp_path / "wandb").exists()


def _records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-log chunks in 32 KiB blocks
    (crc32 4, length 2, type 1: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # padding to the block end
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            return
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _logged(run_dir: Path) -> tuple[str, dict, list[dict]]:
    """Run id, config and history rows (keys to JSON values, wandb's own ``_*`` keys left out) of an offline run."""
    (file,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 30
    # wandb's service process may still be writing the file when finish() returns: wait for its exit record.
    while not any(r.WhichOneof("record_type") == "exit" for r in _records(file)) and time.monotonic() < deadline:
        time.sleep(0.2)
    run_id, config, rows = "", {}, []
    for record in _records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            config = {i.key: json.loads(i.value_json) for i in record.run.config.update if i.key != "_wandb"}
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            rows.append({k: v for k, v in items.items() if not k.startswith("_") or k == "_step"})
    return run_id, config, rows


def test_wandb_offline_gets_the_scalars_and_pictures_of_metrics_jsonl(tmp_path, monkeypatch, caplog):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))  # nothing into the home folder
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :10, 0] = 255
    caplog.set_level(logging.INFO, logger="videomae.engine.logging_utils")
    writer = MetricsWriter(out, enabled=True, sinks=LoggingConfig(wandb=True, wandb_project="demo"),
                           run_config={"seed": 3, "train": {"lr": 0.01}})  # fmt: skip
    assert "WANDB_MODE is not set, so logging offline" in caplog.text
    for step in (1, 2, 3):
        writer.write(step, {"loss": 1.0 / step, "lr": 0.01, "note": "text: jsonl only"})
    writer.write(4, {"loss": 0.25, "recon_mse": 0.5, "recon_picture": Picture(image, "pictures/step_00000004.png")})
    writer.close()
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert jsonl[-1] == {"step": 4, "loss": 0.25, "recon_mse": 0.5, "recon_picture": "pictures/step_00000004.png"}
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run_id, config, rows = _logged(run_dir)
    assert run_id == (out / "wandb/run_id").read_text().strip() and config == {"seed": 3, "train": {"lr": 0.01}}
    scalars = [{k: v for k, v in r.items() if k.startswith("train/") or k == "_step"} for r in rows]
    expected = [{"_step": s, **{f"train/{k}": v for k, v in row.items() if isinstance(v, float)}} for s, row in
                zip((1, 2, 3, 4), jsonl)]  # fmt: skip
    assert scalars == expected
    picture = {k.removeprefix("pictures/recon_picture/"): v for k, v in rows[-1].items() if k.startswith("pictures/")}
    assert (picture["_type"], picture["width"], picture["height"]) == ("image-file", 30, 20)
    saved = np.asarray(Image.open(run_dir / "files" / picture["path"]))
    assert np.array_equal(saved, image)
    # A resumed run (from step 2) continues the same wandb run, from the step it resumes at.
    monkeypatch.setenv("WANDB_MODE", "offline")
    caplog.clear()
    time.sleep(1.1)  # wandb names offline runs by the second they start
    resumed = MetricsWriter(out, enabled=True, start_step=2, sinks=LoggingConfig(wandb=True))
    resumed.write(5, {"loss": 0.2})
    resumed.close()
    assert "WANDB_MODE is not set" not in caplog.text  # the user's setting is taken as it is
    second = sorted((out / "wandb").glob("offline-run-*"))
    assert len(second) == 2
    later = next(d for d in second if d != run_dir)
    assert _logged(later)[0] == run_id and _logged(later)[2] == [{"_step": 5, "train/loss": 0.2}]
