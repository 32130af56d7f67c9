"""Distillation in the fine-tuning engine: the loss against a hand computation, the teacher's classes matched by
name (and refused when they differ), config checks, and runs through the real DeepSpeed engine on demo clips via
``launch/finetune.py``: the distillation term falls, the teacher stays frozen and out of the checkpoints, and a
resumed run restores the feature projector."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_deepspeed_file
from run_helpers import FINETUNE_DEMO_YAML, ROOT, finetune_overrides, records, run_finetune
from safetensors.torch import load_file

from videomae.checkpoint import export_weights
from videomae.config import ConfigError, load_finetune_config
from videomae.data.demo import CLASS_NAMES
from videomae.engine import checkpointing as ckpt
from videomae.methods.distill import DistillStudent, build_distill_loss, load_teacher, teacher_class_order
from videomae.models import create_model

SIZE = dict(img_size=32, patch_size=8, all_frames=4)
STUDENT = dict(SIZE, embed_dim=32, depth=2, num_heads=2)  # the student run_helpers.finetune_overrides() sets
TEACHER = dict(SIZE, embed_dim=48, depth=1, num_heads=2)
DATA_NAMES = list(CLASS_NAMES)
TEACHER_NAMES = DATA_NAMES[::-1]  # another order: the engine must reorder the teacher's logits


def write_teacher(path: Path, names: list[str] | None = TEACHER_NAMES, seed: int = 0, **sizes) -> Path:
    """A random teacher classifier with a confident head, exported (with its class names unless ``names`` is None)."""
    torch.manual_seed(seed)
    model = create_model("vit_tiny_patch16_224", num_classes=len(names or DATA_NAMES), **{**TEACHER, **sizes})
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)  # logits of a few units, not the fresh head's near-uniform ones
    if names is None:
        torch.save(model.state_dict(), path)  # a bare state dict: no model config, no class names
        return path
    return export_weights(model, path, {"label_names": names})


def distill_config(teacher: Path, *extra: str):
    return load_finetune_config(None, ["train.max_steps=1", "data.manifests=[a.csv]", "data.input_size=32",
                                       "data.num_frames=4", f"distill.teacher={teacher}", *extra])  # fmt: skip


# ------------------------------------------------------------------------------------------------ unit level


@pytest.mark.parametrize(("alpha", "temperature"), [(1.0, 3.0), (1.0, 1.0), (0.6, 2.0)])
def test_loss_is_t2_kl_teacher_student_plus_label_term_by_hand(tmp_path, alpha, temperature):
    """``alpha * T^2 KL(p_t || p_s) + (1 - alpha) * CE``, the KL written out in float64 from the two models' own
    logits, the teacher's columns picked by class name."""
    teacher_file = write_teacher(tmp_path / "teacher.safetensors")
    cfg = distill_config(teacher_file, f"distill.alpha={alpha}", f"distill.temperature={temperature}",
                         "train.mixup=0", "train.cutmix=0", "train.smoothing=0")  # fmt: skip
    teacher = load_teacher(cfg.distill, cfg.data, DATA_NAMES, len(DATA_NAMES))
    torch.manual_seed(1)
    student = create_model("vit_tiny_patch16_224", num_classes=len(DATA_NAMES), init_scale=1.0, **STUDENT).eval()
    module = DistillStudent(student, build_distill_loss(cfg.distill, cfg.train, 32, teacher.width))
    videos = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 3, 5, 1])

    terms = module(videos, *teacher(videos), labels)
    loss = sum(module.loss.weighted(terms).values())

    with torch.no_grad():
        s = student(videos).double()
        raw = teacher.model(videos).double()
    t = raw[:, [TEACHER_NAMES.index(name) for name in DATA_NAMES]]  # teacher columns in the data's order
    p_t, p_s = torch.softmax(t / temperature, -1), torch.softmax(s / temperature, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * temperature**2
    ce = -torch.log_softmax(s, -1)[torch.arange(4), labels].mean()
    assert terms["kd"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["hard"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx((alpha * kl + (1 - alpha) * ce).item(), rel=1e-5)
    assert kl.item() > 0.05  # a real difference between the two models, not a vacuous match


def test_label_space_mismatch_is_refused_naming_both_differences(tmp_path):
    names = [n for n in DATA_NAMES if n != "disc_up"] + ["zebra_left"]
    teacher_file = write_teacher(tmp_path / "other.safetensors", names)
    cfg = distill_config(teacher_file)
    with pytest.raises(ConfigError, match=r"distill.teacher: .*only the teacher's: \['zebra_left'\] \(1\); "
                                          r"only the data's: \['disc_up'\] \(1\)"):  # fmt: skip
        load_teacher(cfg.distill, cfg.data, DATA_NAMES, len(DATA_NAMES))
    # Fewer teacher classes: the data's extra classes are named.
    with pytest.raises(ConfigError, match=r"only the teacher's: \[\] \(0\); only the data's: \['x', 'y'\] \(2\)"):
        teacher_class_order(["a", "b"], ["a", "x", "b", "y"], 2, 4)


def test_teacher_class_order_by_name_and_without_names(tmp_path):
    assert torch.equal(teacher_class_order(["b", "A", "c"], ["a", "b", "c"], 3, 3), torch.tensor([1, 0, 2]))
    assert teacher_class_order(["a", "b"], ["a", "b"], 2, 2) is None
    assert teacher_class_order(None, None, 3, 3) is None  # bare integer labels on both sides: the order as it is
    with pytest.raises(ConfigError, match="a 4-class teacher for 3 data classes"):
        teacher_class_order(None, None, 4, 3)
    with pytest.raises(ConfigError, match="data.labels: the data's labels are bare integers"):
        teacher_class_order(["a", "b"], None, 2, 2)
    with pytest.raises(ConfigError, match="distill.teacher_labels: 3 class names for a teacher head of 2"):
        teacher_class_order(["a", "b", "c"], ["a", "b"], 2, 2)
    # A checkpoint without its model config or class names: built from teacher_model, named by teacher_labels.
    bare = write_teacher(tmp_path / "teacher.pth", names=None)
    built = ["distill.teacher_model=vit_tiny_patch16_224", f"distill.teacher_overrides={TEACHER | {'num_classes': 6}}"]
    cfg = distill_config(bare, *built)
    with pytest.raises(ConfigError, match="distill.teacher_labels: the teacher's checkpoint does not name"):
        load_teacher(cfg.distill, cfg.data, DATA_NAMES, 6)
    (tmp_path / "labels.txt").write_text("\n".join(TEACHER_NAMES) + "\n")
    cfg = distill_config(bare, *built, f"distill.teacher_labels={tmp_path / 'labels.txt'}")
    teacher = load_teacher(cfg.distill, cfg.data, DATA_NAMES, 6)
    assert teacher.class_order.tolist() == [5, 4, 3, 2, 1, 0] and teacher.width == 48
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_must_take_the_data_clips_and_exist(tmp_path):
    teacher_file = write_teacher(tmp_path / "teacher.safetensors", all_frames=8)
    cfg = distill_config(teacher_file)
    with pytest.raises(
        ConfigError, match="distill.teacher: the teacher takes 8-frame clips of 32 px, the data gives 4"
    ):
        load_teacher(cfg.distill, cfg.data, DATA_NAMES, 6)
    cfg = distill_config(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="distill.teacher: .*missing.safetensors does not exist"):
        load_teacher(cfg.distill, cfg.data, DATA_NAMES, 6)


@pytest.mark.parametrize(
    ("override", "named", "allowed"),
    [
        ("distill.alpha=1.5", "distill.alpha", r"\[0, 1\]"),
        ("distill.temperature=0", "distill.temperature", "> 0"),
        ("distill.feature_weight=-1", "distill.feature_weight", ">= 0"),
        ("distill.feature_loss=l3", "distill.feature_loss", "'mse', 'smooth_l1', 'cosine'"),
        ("distill.teacher_overrides={depth: 2}", "distill.teacher_overrides", "unless distill.teacher_model"),
        ("distill.teacher_model=pretrain_videomae_tiny_patch16_224", "distill.teacher_model", "classification"),
        ("distill.alpha=0", "distill.alpha", "teacher is unused"),
        ("distill.tmperature=2", "distill.tmperature", "allowed keys: teacher"),
    ],
)
def test_bad_distill_values_are_refused_with_the_dotted_key(override, named, allowed):
    with pytest.raises(ConfigError, match=rf"^{named}: .*{allowed}"):
        load_finetune_config(None, ["train.max_steps=1", "data.manifests=[a.csv]", "distill.teacher=t.safetensors",
                                    override])  # fmt: skip
    cfg = load_finetune_config(None, ["train.max_steps=1", "data.manifests=[a.csv]", "distill.teacher=t.safetensors",
                                      "distill.alpha=0", "distill.feature_weight=0.5"])  # fmt: skip
    assert cfg.distill.alpha == 0  # features alone use the teacher


def test_the_vit_b_recipe_is_the_fine_tune_recipe_plus_distillation():
    configs = ROOT / "videomae/recipes/finetune"
    distill = load_finetune_config(configs / "distill_vit_b_from_g_k400.yaml")
    plain = load_finetune_config(configs / "vit_b_k400.yaml")
    teacher_run = load_finetune_config(configs / "vit_g_k710_to_k400.yaml").output_dir
    assert distill.distill.teacher == f"{teacher_run}/export/model.safetensors"
    assert (distill.distill.alpha, distill.distill.feature_weight, plain.distill.teacher) == (1.0, 0.0, None)
    assert (distill.data, distill.model, distill.train, distill.deepspeed) == (
        plain.data, plain.model, plain.train, plain.deepspeed
    )  # fmt: skip
    # The demo distils demo.yaml's export on the same clips into a smaller student.
    demo, teacher = load_finetune_config(configs / "distill_demo.yaml"), load_finetune_config(FINETUNE_DEMO_YAML)
    assert demo.distill.teacher == f"{teacher.output_dir}/export/model.safetensors" and demo.data == teacher.data
    smaller = demo.model.overrides["embed_dim"] < teacher.model.overrides["embed_dim"]
    assert smaller and demo.model.overrides["depth"] < teacher.model.overrides["depth"]


# ------------------------------------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def distill_args(demo: Path, out: Path, teacher: Path, *extra: str) -> list[str]:
    return finetune_overrides(demo, out, f"distill.teacher={teacher}", "train.smoothing=0", *extra)


@pytest.mark.slow
def test_distillation_term_falls_and_the_logged_terms_make_the_loss(demo, teacher, tmp_path):
    """30 steps of a student learning from a fixed random teacher on mixed clips: the logged distillation term
    falls clearly (to ~0.3 of its start over seeds 0-2), and every logged loss is ``alpha * loss_kd + (1 - alpha) *
    loss_label``."""
    out = tmp_path / "run"
    run_finetune(distill_args(demo, out, teacher, "train.max_steps=30", "train.save_every=100", "distill.alpha=0.8",
                     "distill.temperature=2", "train.mixup=0.8", "train.cutmix=0", "train.lr=0.5", "train.min_lr=1e-3",
                     "train.warmup_steps=3"))  # fmt: skip
    seq = records(out)
    assert sorted(seq) == list(range(1, 31)) and "loss_feature" not in seq[1]
    for r in seq.values():
        assert r["loss"] == pytest.approx(0.8 * r["loss_kd"] + 0.2 * r["loss_label"], rel=1e-5)
    first = sum(seq[s]["loss_kd"] for s in range(1, 6)) / 5
    last = sum(seq[s]["loss_kd"] for s in range(26, 31)) / 5
    assert last < 0.5 * first, (first, last)
    # The export is the student alone, under a plain classifier's key names.
    exported = load_file(out / "export/model.safetensors")
    assert exported.keys() == create_model("vit_tiny_patch16_224", num_classes=6, **STUDENT).state_dict().keys()


INSPECT_TEACHER = """
import sys, torch
from videomae.config import load_finetune_config
from videomae.methods.finetune import build_finetune_trainer

run = build_finetune_trainer(load_finetune_config(sys.argv[2], sys.argv[3:]))
before = {k: v.clone() for k, v in run.method.teacher.model.state_dict().items()}
run.fit()
model = run.method.teacher.model
torch.save({"before": before, "after": model.state_dict(), "training": model.training,
            "frozen": not any(p.requires_grad or p.grad is not None for p in model.parameters())}, sys.argv[1])
"""


@pytest.mark.slow
def test_teacher_frozen_and_outside_checkpoints_and_resume_restores_the_projector(demo, teacher, tmp_path):
    ref = tmp_path / "ref"
    args = distill_args(demo, ref, teacher, "train.max_steps=6", "train.lr=0.05", "train.save_every=3",
                        "train.keep_last=3", "distill.alpha=0.5", "distill.feature_weight=0.5", "train.mixup=0.8",
                        "train.cutmix=1.0", "deepspeed.zero_stage=2")  # fmt: skip
    dump = tmp_path / "teacher.pt"
    proc = subprocess.run([sys.executable, "-c", INSPECT_TEACHER, str(dump), str(FINETUNE_DEMO_YAML), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = torch.load(dump)
    assert got["training"] is False and got["frozen"]
    on_disk = load_file(teacher)
    assert got["after"].keys() == on_disk.keys()
    assert all(torch.equal(got["after"][k], on_disk[k]) and torch.equal(got["before"][k], on_disk[k]) for k in on_disk)

    # Checkpoints hold the student and the projector, nothing of the teacher (module and ZeRO optimizer state).
    student = create_model("vit_tiny_patch16_224", num_classes=6, **STUDENT)
    projector = {"loss.projector.weight": (48, 32), "loss.projector.bias": (48,)}
    trainable = sum(p.numel() for p in student.parameters()) + 48 * 32 + 48
    states = {}
    for step in (3, 6):
        folder = ref / "checkpoints" / ckpt.tag_for(step)
        module = load_deepspeed_file(folder / "mp_rank_00_model_states.pt")["module"]
        assert set(module) == {f"student.{k}" for k in student.state_dict()} | set(projector)
        assert {k: tuple(module[k].shape) for k in projector} == projector
        states[step] = module
        optim = load_deepspeed_file(folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        flat = optim["optimizer_state_dict"]["single_partition_of_fp32_groups"]
        assert trainable <= sum(t.numel() for t in flat) < trainable + 64  # (alignment padding at most)
    assert not torch.equal(states[3]["loss.projector.weight"], states[6]["loss.projector.weight"])  # it trains
    seq = records(ref)
    assert all(seq[s]["loss"] == pytest.approx(0.5 * (seq[s]["loss_kd"] + seq[s]["loss_label"])
                                               + 0.5 * seq[s]["loss_feature"], rel=1e-5) for s in seq)  # fmt: skip

    # Resumed from step 3: the same losses, feature term included, and the same final projector.
    out = tmp_path / "resumed"
    log = run_finetune([a.replace(str(ref), str(out)) for a in args] + [f"resume={ref}/checkpoints/step_00000003"])
    assert f"resumed from {ref}/checkpoints/step_00000003 at step 3" in log
    resumed = records(out)
    assert sorted(resumed) == [4, 5, 6]
    for step in resumed:
        for key in ("loss", "loss_kd", "loss_label", "loss_feature"):
            assert resumed[step][key] == seq[step][key], (step, key)
    final = load_deepspeed_file(out / "checkpoints" / ckpt.tag_for(6) / "mp_rank_00_model_states.pt")
    assert all(torch.equal(final["module"][k], states[6][k]) for k in projector)
