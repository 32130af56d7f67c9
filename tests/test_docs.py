"""docs/ and the README stand alone: every relative link resolves inside the repository, and every config key the
docs name (the API tables, the migration guide's flag table) exists in the config dataclasses, and the API tables
name them all."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import re
import typing
from pathlib import Path

import pytest

from videomae.config import ConfigError, FinetuneConfig, ManifestSource
from videomae.config.methods import METHODS, method_config_class
from videomae.launching.launcher import FINETUNE, parse_args
from videomae.models import PretrainVisionTransformer, VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")


def config_keys() -> set[str]:
    """Every dotted key of each pretraining method's config and of fine-tuning, and manifests' fields."""
    keys: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                keys.add(prefix + f.name)

    for method in METHODS:  # every pretraining method's config (a method not built yet has no module)
        try:
            walk(method_config_class(method), "")
        except ConfigError:
            continue
    walk(FinetuneConfig, "")
    for name in ("manifests", "val_manifests", "test_manifests"):
        keys |= {f"data.{name}[].{f.name}" for f in dataclasses.fields(ManifestSource)}
    return keys


MODEL_ARGUMENTS = set(inspect.signature(PretrainVisionTransformer).parameters) | set(
    inspect.signature(VisionTransformer).parameters
)


def launcher_options() -> set[str]:
    """The options of ``launch/pretrain.py`` and ``launch/finetune.py``, as their ``--help`` lists them."""
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        parse_args(["--help"], "", FINETUNE)
    return set(re.findall(r"--[a-z][a-z_-]*", help_text.getvalue()))


def key_problem(token: str) -> str | None:
    """Why ``token`` (``section.key``, ``section.key: value``, ``model.overrides.ARG`` or a launcher ``--flag``) is
    not one of ours, or None."""
    if token.startswith("--"):
        return None if token in launcher_options() else f"{token}: not an option of launch/*.py"
    key = token.split(":")[0].strip()
    if key.startswith("model.overrides."):
        arg = key.removeprefix("model.overrides.")
        return None if arg in MODEL_ARGUMENTS else f"{key}: {arg} is not a model constructor argument"
    return None if key in config_keys() else f"{key}: no such config key"


def table_rows(text: str, header: str) -> list[list[str]]:
    """Cells of every markdown table row under a header row starting with ``header`` (all such tables)."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
        elif inside and line.startswith("|"):
            if not line.startswith("| ---"):
                rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        else:
            inside = False
    return rows


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


# ---------------------------------------------------------------------------------------------------- links


def test_docs_exist():
    assert {p.name for p in DOCS} >= {"api.md", "manifests.md", "cluster.md", "migration.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(page):
    problems = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not a file of ours
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md":
            headings = {slug(h) for h in re.findall(r"^#+ (.+)$", resolved.read_text(), re.M)}
            if anchor not in headings:
                problems.append(f"{target}: no heading with that anchor")
    assert problems == [], f"{page.name}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_never_point_outside_the_repository(page):
    assert "../shared" not in page.read_text() and "shared/DESIGN" not in page.read_text()


# ---------------------------------------------------------------------------------------------------- keys


def test_the_key_check_catches_a_wrong_key():
    assert key_problem("train.lr") is None and key_problem("train.lr_scale_by: videos") is None
    assert key_problem("data.manifests[].frame_template") is None and key_problem("--eval-only") is None
    assert key_problem("model.overrides.tubelet_size") is None
    assert key_problem("train.learning_rate") == "train.learning_rate: no such config key"
    assert key_problem("model.overrides.tubelet") is not None and key_problem("--eval") is not None


def test_the_migration_table_names_only_our_keys():
    rows = table_rows((ROOT / "docs/migration.md").read_text(), "| their flag | our key |")
    assert len(rows) >= 50, "the flag table was not found"
    theirs = {CODE.findall(row[0])[0] for row in rows}
    assert {"--mask_type", "--decoder_mask_ratio", "--batch_size", "--test_num_crop", "--layer_decay"} <= theirs
    problems = [p for row in rows for token in CODE.findall(row[1]) if (p := key_problem(token))]
    assert problems == []
    assert all(CODE.findall(row[1]) for row in rows), "every flag row names one of our keys"


def test_the_api_tables_name_every_config_key_and_only_those():
    text = (ROOT / "docs/api.md").read_text()
    documented = {CODE.findall(row[0])[0] for row in table_rows(text, "| key | stage |")}
    fields = {CODE.findall(row[0])[0] for row in table_rows(text, "| field | default |")}
    ours = config_keys()
    assert sorted(documented - ours) == [], "documented keys that do not exist"
    assert sorted(k for k in ours - documented if "[]" not in k) == [], "config keys docs/api.md leaves out"
    assert fields == {f.name for f in dataclasses.fields(ManifestSource)}
