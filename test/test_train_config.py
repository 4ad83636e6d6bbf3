"""Experiment configs: YAML + _base_ + dotted overrides, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from vltseg_core.train.config import (Config, ConfigError, load_config, parse_override,
                                      select_targets)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ntrain: {iters: 100}\n")
    cfg = load_config(path, ["train.iters=7", "train.lr=1e-3", "data.crop_size=[64,32]",
                             "model.options.drop_path_rate=0.2", "train.layer_decay=0.9"])
    assert isinstance(cfg, Config)
    assert cfg.train.iters == 7 and cfg.train.lr == 1e-3  # '1e-3' is a str to PyYAML
    assert cfg.data.crop_size == (64, 32)
    assert cfg.model.options == {"drop_path_rate": 0.2}
    assert cfg.train.weight_decay == 0.05 and cfg.train.backbone_lr_mult == 0.1
    assert cfg.out_dir == Path("runs/x")


def test_base_inheritance_merges_sections(tmp_path: Path) -> None:
    _write(tmp_path, "name: base\ntrain: {iters: 10, lr: 0.5}\ndata: {batch_size: 8}\n", "b.yaml")
    path = _write(tmp_path, "_base_: b.yaml\nname: child\ntrain: {iters: 20}\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.train.iters, cfg.train.lr, cfg.data.batch_size) == ("child", 20, 0.5, 8)


def test_targets_and_env_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, """
eval:
  targets:
    - {label: fog, name: acdc, root: "${VLTSEG_T:-/nowhere}/x", options: {conditions: [fog]}}
    - {name: cityscapes, root: /data/cs, split: val}
""")
    cfg = load_config(path)
    assert [t.title for t in cfg.eval.targets] == ["fog", "cityscapes/val"]
    assert cfg.eval.targets[0].resolved_root() == Path("/nowhere/x")
    monkeypatch.setenv("VLTSEG_T", "/here")
    assert cfg.eval.targets[0].resolved_root() == Path("/here/x")
    assert [t.title for t in select_targets(cfg, ["fog"]).eval.targets] == ["fog"]
    with pytest.raises(ConfigError, match="unknown target 'rain'"):
        select_targets(cfg, ["rain"])


def test_unquoted_off_is_the_word_not_a_boolean(tmp_path: Path) -> None:
    """YAML 1.1 reads `off` as false; `train.amp=off` on a command line still means "off"."""
    assert load_config(_write(tmp_path, "train: {amp: off}"), []).train.amp == "off"
    assert load_config(_write(tmp_path, ""), ["train.amp=off"]).train.amp == "off"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("train: {iterz: 3}", [], r"unknown config key 'train.iterz' \(did you mean 'train.iters'\?\)"),
        ("", ["modle.preset=x"], "unknown config key 'modle'"),
        ("train: {iters: ten}", [], "train.iters: expected int, got 'ten'"),
        ("", ["train.iters=0"], r"train.iters: must be > 0, got 0"),
        ("", ["train.amp=fp8"], r"train.amp: expected one of \['off', 'bf16', 'fp16', 'auto'\]"),
        ("", ["train.amp=yes"], r"train.amp: expected one of \['off', 'bf16', 'fp16', 'auto'\], got True"),
        ("", ["data.crop_size=[1,2,3]"], "data.crop_size: expected 2 values"),
        ("", ["train.deterministic=maybe"], "train.deterministic: expected bool"),
        ("", ["train.iters"], "not of the form key.sub=value"),
        ("", ["train.warmup_iters=6000"], r"train.warmup_iters: must be in \[0, train.iters\)"),
        ("", ["data.focus_prob=1.5"], r"data.focus_prob: must be in \[0, 1\], got 1.5"),
        ("", ["data.focus_classes=[11,300]"], r"data.focus_classes: must be train ids"),
        ("eval: {targets: [{name: acdc}]}", [], "eval.targets\\[0\\]: missing required key 'root'"),
        ("- a\n- b\n", [], "top level must be a mapping"),
        ("_base_: nope.yaml\n", [], "config file not found"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, text: str, overrides: list[str],
                                   message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, overrides)
    assert "\n" not in str(info.value)


def test_override_values_parse_as_yaml() -> None:
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=null") == ("a", None)
    assert parse_override("a=x=y") == ("a", "x=y")


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.train.iters > 0 and cfg.eval.targets, f"{path.name} has no eval targets"


def test_paper_schedules_match_the_paper() -> None:
    """Synthetic sources: 512 crops, 5k it, batch 16; Cityscapes: 1024 crops, 20k it, batch 8."""
    load = lambda stem: load_config(REPO / "configs" / f"{stem}.yaml")  # noqa: E731
    for stem in ("gta5_to_cbm", "synthia_to_cbm", "det_synthia_to_cityscapes"):
        cfg = load(stem)
        assert (cfg.data.crop_size, cfg.train.iters, cfg.data.batch_size) == ((512, 512), 5000, 16)
        assert [t.title for t in cfg.eval.targets][:1] == ["cityscapes"]
    for stem in ("cityscapes_to_acdc", "cityscapes_fine"):
        cfg = load(stem)
        assert (cfg.data.crop_size, cfg.train.iters, cfg.data.batch_size) == ((1024, 1024), 20000, 8)
        assert (cfg.eval.mode, cfg.eval.crop_size, cfg.eval.stride) == ("slide", (1024, 1024), (768, 768))
    for stem in ("gta5_to_cbm", "synthia_to_cbm", "cityscapes_to_acdc", "cityscapes_fine"):
        cfg = load(stem)
        assert cfg.model.preset == "vltseg_eva02_l14_m2f" and cfg.task == "seg"
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.backbone_lr_mult) == (1e-4, 0.05, 0.1)
    assert [t.title for t in load("gta5_to_cbm").eval.targets] == ["cityscapes", "bdd", "mapillary"]
    assert load("cityscapes_to_acdc").eval.targets[0].options == {"conditions": ["fog"]}
    assert load("det_synthia_to_cityscapes").task == "det"
