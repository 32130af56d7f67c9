"""Config: shipped YAMLs, dotted overrides, strict validation naming the key, the lr rule, round trips."""

from __future__ import annotations

import json

import pytest

from videomae.config import (
    ConfigError,
    ManifestSource,
    PretrainConfig,
    apply_overrides,
    classifier_kwargs,
    config_to_dict,
    load_config,
    load_finetune_config,
    parse_override,
    save_config,
)
from videomae.config.batch_plan import batch_plan
from videomae.models import list_models
from videomae.recipes import RECIPES

CONFIG_DIR = RECIPES / "pretrain"
# VideoMAE's recipes (the other methods' recipes are checked by their own tests)
SHIPPED = sorted(p for p in CONFIG_DIR.glob("*.yaml") if "\nmethod:" not in "\n" + p.read_text())
STEPS = ["train.max_steps=10"]


def test_configs_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"demo", "vit_s_hybrid", "vit_b_hybrid", "vit_l_hybrid", "vit_h_hybrid", "vit_g_hybrid"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_loads_and_names_a_registered_model(path):
    cfg = load_config(path)
    assert cfg.model.name in list_models()
    assert cfg.train.betas == [0.9, 0.95]
    assert cfg.train.weight_decay == 0.05
    assert (cfg.mask.type, cfg.mask.ratio, cfg.mask.decoder_type, cfg.mask.decoder_ratio) == (
        "tube",
        0.9,
        "run_cell",
        0.5,
    )


@pytest.mark.parametrize("size", ["s", "b", "l", "h", "g"])
def test_published_recipes(size):
    cfg = load_config(CONFIG_DIR / f"vit_{size}_hybrid.yaml")
    assert (cfg.data.num_frames, cfg.data.sampling_rate, cfg.data.input_size, cfg.data.num_sample) == (16, 4, 224, 4)
    assert cfg.model.decoder_depth == 4
    assert cfg.train.min_lr == 1e-5
    assert cfg.train.lr == (6e-4 if size == "g" else 1e-3)
    assert cfg.train.clip_grad == (0.02 if size == "g" else None)
    # The release's lr: base * batch * GPUs / 256, without num_sample; lr_scale_by=videos reproduces it.
    assert cfg.train.lr_scale_by == "videos"
    assert batch_plan(cfg, world_size=64).peak_lr == pytest.approx(cfg.train.lr * cfg.train.batch_size * 64 / 256)


def test_lr_rule_counts_clips_and_accumulation():
    cfg = load_config(None, STEPS + ["train.lr=1e-3", "train.batch_size=32", "train.grad_accum=2"])
    # 32 videos x 8 ranks x 2 accumulation x 4 clips = 2048 clips -> 1e-3 * 2048 / 256 = 8e-3
    plan = batch_plan(cfg, world_size=8)
    assert cfg.data.num_sample == 4 and (plan.clips_per_micro_step, plan.clips_per_rank_step) == (128, 256)
    assert (plan.clips_per_step, plan.videos_per_step, plan.lr_batch) == (2048, 512, 2048)
    assert plan.peak_lr == pytest.approx(8e-3)
    videos = load_config(None, STEPS + ["train.lr=1e-3", "train.batch_size=32", "train.grad_accum=2",
                                        "train.lr_scale_by=videos"])  # fmt: skip
    assert batch_plan(videos, world_size=8).lr_batch == 512  # 32 x 8 x 2 videos, as the releases count
    assert batch_plan(videos, world_size=8).peak_lr == pytest.approx(2e-3)


def test_overrides_are_yaml_and_later_ones_win():
    cfg = load_config(
        CONFIG_DIR / "demo.yaml",
        [
            "train.max_steps=10",
            "deepspeed.zero_stage=3",
            "data.manifests=[a.csv,{path: b.csv, weight: 2, repeat: 0.5, data_root: /d}]",
            "train.lr=1e-3",
            "train.lr=2e-3",
            "model.overrides={img_size: 32}",
            "init=null",
        ],
    )
    assert cfg.train.max_steps == 10 and cfg.deepspeed.zero_stage == 3
    assert cfg.data.manifests == [
        ManifestSource("a.csv"),
        ManifestSource("b.csv", data_root="/d", weight=2.0, repeat=0.5),
    ]
    assert cfg.train.lr == 2e-3 and isinstance(cfg.train.lr, float)
    assert cfg.model.overrides == {"img_size": 32}
    assert cfg.init is None


def test_parse_override_reads_exponents_as_floats():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("a.b=[1, x]") == (["a", "b"], [1, "x"])
    assert parse_override("a=") == (["a"], None)


@pytest.mark.parametrize(
    ("override", "named", "allowed"),
    [
        ("train.foo=1", "train.foo", "allowed keys: batch_size"),
        ("trian.lr=1", "trian", "allowed keys: output_dir"),
        ("deepspeed.zero_stage=4", "deepspeed.zero_stage", "0, 1, 2, 3"),
        ("precision=fp8", "precision", "'fp32', 'bf16', 'fp16'"),
        ("train.batch_size=two", "train.batch_size", "expected int"),
        ("train.batch_size=1.5", "train.batch_size", "expected int"),
        ("train.batch_size=0", "train.batch_size", ">= 1"),
        ("train.compile=maybe", "train.compile", "expected bool"),
        ("mask.ratio=1.2", "mask.ratio", "(0, 1)"),
        ("mask.type=block", "mask.type", "'tube', 'random'"),
        ("data.manifests=[{pth: a.csv}]", "data.manifests[0].pth", "allowed keys: path"),
        ("data.manifests=[{path: a.csv, weight: -1}]", "data.manifests[0].weight", "> 0"),
        (
            "data.manifests=[{path: a.csv, short_video: stretch}]",
            "data.manifests[0].short_video",
            "allowed values: 'reject', 'shrink_stride', 'loop', 'pad'",
        ),
        ("data.manifests=a.csv", "data.manifests", "expected a list"),
        ("train.betas=[0.9]", "train.betas", "two numbers"),
        ("train.epochs=3", "train.max_steps", "exactly one of"),
        ("deepspeed.offload_param=true", "deepspeed.offload_param", "zero_stage=3"),
        ("deepspeed.offload_device=nvme", "deepspeed.offload_device", "zero_stage=3 (ZeRO-Infinity)"),
        ("deepspeed.offload_device=disk", "deepspeed.offload_device", "'cpu', 'nvme'"),
        ("train.lr_scale_by=gpus", "train.lr_scale_by", "'clips', 'videos'"),
        ("mask.decoder_ratio=0.6", "mask.decoder_ratio", "0.25, 0.5 or 0.75"),
        ("data.hflip_prob=1.5", "data.hflip_prob", "[0, 1]"),
        ("data.decode_backend=opencv", "data.decode_backend", "'auto', 'decord', 'pyav'"),
    ],
)
def test_bad_keys_and_values_are_refused_naming_the_key(override, named, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, STEPS + [override])
    message = str(err.value)
    assert message.startswith(named + ":") or message.startswith(named + " "), message
    assert allowed in message


def test_nvme_offload_needs_something_to_offload_and_a_folder():
    nvme = [*STEPS, "deepspeed.zero_stage=3", "deepspeed.offload_device=nvme"]
    with pytest.raises(ConfigError, match=r"^deepspeed.offload_device: .*offload_optimizer or"):
        load_config(None, [*nvme, "deepspeed.nvme_path=/scratch"])
    with pytest.raises(ConfigError, match=r"^deepspeed.nvme_path: .*a folder"):
        load_config(None, [*nvme, "deepspeed.offload_param=true"])
    assert load_config(None, [*nvme, "deepspeed.offload_param=true", "deepspeed.nvme_path=/s"]).deepspeed.nvme_path


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="train.max_steps: is a value, not a section"):
        apply_overrides({"train": {"max_steps": 3}}, ["train.max_steps.x=1"])
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(listing)


def test_saved_config_loads_back_identical(tmp_path):
    cfg = load_config(CONFIG_DIR / "demo.yaml", ["data.manifests=[{path: a.csv, weight: 3}]", "train.clip_grad=null"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_to_dict(again)["data"]["manifests"][0]["weight"] == 3.0


def test_defaults_need_a_step_budget():
    with pytest.raises(ConfigError, match="exactly one of train.max_steps and train.epochs"):
        load_config(None)
    assert isinstance(load_config(None, ["train.epochs=2"]), PretrainConfig)


# ----------------------------------------------------------------------------------------------------------------
# fine-tuning configs

FINETUNE_DIR = CONFIG_DIR.parent / "finetune"
FINETUNE_SHIPPED = sorted(FINETUNE_DIR.glob("*.yaml"))


def test_finetune_configs_are_shipped():
    names = {p.stem for p in FINETUNE_SHIPPED}
    assert {"demo", "vit_b_k400", "vit_l_k400", "vit_h_k400", "vit_g_k710", "vit_g_k710_to_k400"} <= names


@pytest.mark.parametrize("path", FINETUNE_SHIPPED, ids=[p.stem for p in FINETUNE_SHIPPED])
def test_every_finetune_config_loads_and_names_a_classifier(path):
    cfg = load_finetune_config(path)
    assert cfg.model.name in list_models("vit_") and not cfg.model.name.startswith("pretrain_")
    assert cfg.data.manifests and cfg.data.val_manifests
    assert path.read_text().startswith("#"), "every recipe states what it is in a header comment"
    again = load_finetune_config(None, [f"{k}={json.dumps(v)}" for k, v in config_to_dict(cfg).items()])
    assert again == cfg


@pytest.mark.parametrize(
    ("name", "gpus", "lr_abs", "layer_decay", "drop_path", "epochs"),
    [
        ("vit_b_k400", 64, 5e-4 * 6 * 64 / 256, 0.75, 0.1, 75),
        ("vit_l_k400", 64, 2e-3 * 2 * 64 / 256, 0.75, 0.1, 35),
        ("vit_h_k400", 64, 1e-3 * 8 * 64 / 256, 0.75, 0.2, 50),
        ("vit_g_k710", 32, 1e-3 * 3 * 32 / 256, 0.9, 0.3, 35),
    ],
)
def test_published_finetune_recipes(name, gpus, lr_abs, layer_decay, drop_path, epochs):
    cfg = load_finetune_config(FINETUNE_DIR / f"{name}.yaml")
    t, d = cfg.train, cfg.data
    # The release scales by videos (batch x GPUs), leaving num_sample out.
    assert t.lr_scale_by == "videos" and batch_plan(cfg, gpus).peak_lr == pytest.approx(lr_abs)
    assert (t.layer_decay, cfg.model.drop_path_rate, t.epochs) == (layer_decay, drop_path, epochs)
    assert (t.smoothing, t.mixup, t.cutmix, d.reprob, d.rand_augment) == (
        0.1,
        0.8,
        1.0,
        0.25,
        "rand-m7-n4-mstd0.5-inc1",
    )
    assert (d.num_sample, d.num_frames, d.sampling_rate, d.test_num_segment, d.test_num_crop) == (2, 16, 4, 5, 3)
    assert t.betas == [0.9, 0.999] and t.warmup_epochs == 5


def test_finetune_defaults_follow_the_release():
    cfg = load_finetune_config(None, STEPS + ["data.manifests=[a.csv]"])
    t = cfg.train
    assert (t.layer_decay, t.smoothing, t.mixup, t.cutmix, t.mixup_prob, t.mixup_switch_prob) == (
        0.75, 0.1, 0.8, 1.0, 1.0, 0.5,
    )  # fmt: skip
    assert cfg.data.num_sample == 2 and t.betas == [0.9, 0.999] and cfg.init_label_map == "auto"


@pytest.mark.parametrize(
    ("override", "named", "allowed"),
    [
        ("train.mixup_rate=0.8", "train.mixup_rate", "allowed keys: batch_size"),
        ("train.mixup=-0.5", "train.mixup", ">= 0"),
        ("train.mixup=lots", "train.mixup", "expected float"),
        ("train.mixup_mode=video", "train.mixup_mode", "'batch', 'pair', 'elem'"),
        ("train.mixup_prob=2", "train.mixup_prob", "[0, 1]"),
        ("train.layer_decay=1.5", "train.layer_decay", "(0, 1]"),
        ("train.smoothing=1.0", "train.smoothing", "[0, 1)"),
        ("train.ema_decay=1.0", "train.ema_decay", "(0, 1)"),
        ("train.picture_every=10", "train.picture_every", "allowed keys"),
        ("data.rand_augment=rand-x9", "data.rand_augment", "rand-m7-n4-mstd0.5-inc1"),
        ("data.reprob=1.5", "data.reprob", "[0, 1]"),
        ("data.test_num_crop=0", "data.test_num_crop", ">= 1"),
        ("data.short_side_size=100", "data.short_side_size", "data.input_size (224)"),
        ("data.val_manifests=[{path: v.csv, wieght: 2}]", "data.val_manifests[0].wieght", "allowed keys: path"),
        ("model.name=pretrain_videomae_base_patch16_224", "model.name", "classification model"),
        ("model.decoder_depth=4", "model.decoder_depth", "allowed keys: name"),
        ("train.eval_every=100", "train.eval_every", "data.val_manifests"),
        ("train.save_best=true", "train.save_best", "data.val_manifests"),
        ("train.batch_size=3", "train.batch_size", "even number of clips"),
        ("train.ema=true", "train.ema", "zero_stage 0, 1 or 2"),
        ("init_labelmap=auto", "init_labelmap", "allowed keys: output_dir"),
    ],
)
def test_bad_finetune_keys_and_values_are_refused_naming_the_key(override, named, allowed):
    extra = ["deepspeed.zero_stage=3"] if override.startswith("train.ema=") else []
    base = [*STEPS, "data.manifests=[a.csv]", "data.num_sample=1", *extra]
    with pytest.raises(ConfigError) as err:
        load_finetune_config(None, [*base, override])
    message = str(err.value)
    assert message.startswith(named + ":"), message
    assert allowed in message


def test_num_classes_override_contradicting_the_data_is_refused():
    cfg = load_finetune_config(None, [*STEPS, "data.manifests=[a.csv]", "model.overrides={num_classes: 400}"])
    with pytest.raises(ConfigError, match=r"^model.overrides.num_classes: got 400, but the data has 6 classes"):
        classifier_kwargs(cfg.model, 6)
    kwargs = classifier_kwargs(cfg.model, 400)
    assert kwargs["num_classes"] == 400 and kwargs["use_mean_pooling"] is True


def test_the_method_key_picks_the_config_class_and_is_refused_when_unknown(tmp_path):
    from videomae.config.methods import METHODS, method_of

    cfg = load_config(None, ["train.max_steps=1"])
    assert type(cfg).__name__ == "PretrainConfig" and cfg.method == "videomae"
    assert set(METHODS) == {"videomae", "mae_image", "mocov3", "maeclip"} and method_of({}) == "videomae"
    path = tmp_path / "run.yaml"
    path.write_text("method: mocco\n")
    with pytest.raises(ConfigError, match=r"method: 'mocco' is not a pretraining method; choose one of .*mocov3"):
        load_config(path, [])
    with pytest.raises(ConfigError, match=r"method: got 'mae_image', allowed: 'videomae' for a PretrainConfig") as err:
        load_config(None, ["method=mae_image", "train.max_steps=1"], kind=PretrainConfig)
    assert "run.yaml" not in str(err.value)
