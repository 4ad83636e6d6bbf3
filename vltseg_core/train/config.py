"""Experiment configuration: frozen dataclasses read from YAML, with dotted command-line overrides.

One file describes one paper experiment (``configs/*.yaml``). A file may name a ``_base_``
file (relative to itself), or a list of them merged in order, whose values it overrides, as
ViTDet's L config imports the B one (``_base_: [../base/gta5.yaml, ../encoders/eva02_b16.yaml]``
pairs a schedule with an encoder).
Every key is checked against the dataclasses below, so a typo fails at start-up with one line
(``unknown config key 'train.iterz' (did you mean 'train.iters'?)``) instead of hours later.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong kind."""


@dataclass(frozen=True)
class DatasetSpec:
    """Arguments of ``vltseg_core.data.build_dataset``; ``label`` names the domain in tables."""

    name: str
    root: str
    split: str = "train"
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.label or f"{self.name}/{self.split}"

    def resolved_root(self) -> Path:
        """``root`` with ``${VAR:-default}``, ``$VARS`` and ``~`` expanded (configs travel)."""
        return expand_path(self.root)


_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def expand_path(text: str) -> Path:
    """``${VLTSEG_DATA:-~/data}/cityscapes`` -> a path (shell-style default, then ``~``)."""
    text = _DEFAULTED.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), text)
    return Path(os.path.expanduser(os.path.expandvars(text)))


@dataclass(frozen=True)
class TargetSpec(DatasetSpec):
    """An evaluation dataset. ``scale`` (long, short) resizes images keeping their aspect
    before inference, as mmseg's test ``Resize(scale, keep_ratio=True)`` (overrides
    ``eval.scale``); ``short_side`` scales the short side instead. Scores go back to label
    size. ``in_average: false`` keeps a pooled column (ACDC 'all') out of the table's Avg."""

    split: str = "val"
    short_side: int | None = None
    scale: tuple[int, int] | None = None
    in_average: bool = True


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "tiny"
    num_classes: int = 19
    checkpoint: str | None = None  # open_clip / model weights to start from
    options: dict[str, Any] = field(default_factory=dict)  # build_model(**options)


@dataclass(frozen=True)
class DataConfig:
    """Training data and augmentation with mmseg/mmcv semantics: ``RandomResize(scale,
    ratio_range, keep_ratio)``. ``scale`` is (w, h) or, keeping the ratio, (long, short);
    ``ratio_range: null`` resizes to ``scale`` itself (mmcv ``Resize``), and with
    ``keep_ratio: false`` every image becomes exactly ``scale`` (the paper configs)."""

    train: DatasetSpec = DatasetSpec("cityscapes", "data/cityscapes")
    scale: tuple[int, int] = (2048, 1024)
    ratio_range: tuple[float, float] | None = (0.5, 2.0)
    keep_ratio: bool = True
    crop_size: tuple[int, int] = (512, 512)  # (H, W)
    cat_max_ratio: float = 0.75
    # class-aware crops: this share of crops holds a pixel of one of focus_classes (train ids)
    focus_classes: tuple[int, ...] = ()
    focus_prob: float = 0.0
    flip: bool = True
    photometric: bool = True
    batch_size: int = 16  # global batch per optimizer step (split over ranks and accumulation)
    num_workers: int = 0


@dataclass(frozen=True)
class TrainConfig:
    iters: int = 5000
    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_lr_mult: float = 0.1
    layer_decay: float | None = None
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    # mmengine PolyLR(begin=poly_begin, end=iters): constant lr before, the last step at 0;
    # null = the mmcv-1.x poly (decay from step 0 to 1/iters) with optional linear warm-up
    poly_begin: int | None = None
    min_lr: float = 0.0
    clip_grad: float | None = 0.01  # max global grad norm (Mask2Former: 0.01); null = off
    accum_steps: int = 1
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU intra-op threads; 0 = torch's default (all cores)
    find_unused_parameters: bool = False  # DDP: set for heads that skip parameters
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 1000
    eval_every: int = 0  # 0 = only at the end (if eval.at_end)
    log_every: int = 10  # tensorboard / progress cadence; JSONL gets every iteration, written now
    image_every: int = 0  # tensorboard sample predictions; 0 = off
    tensorboard: bool = True
    out_dir: str = "runs/${name}"


@dataclass(frozen=True)
class EvalConfig:
    """Targets and inference; paper: sliding 1024x1024 windows at stride 768, no flip."""

    targets: tuple[TargetSpec, ...] = ()
    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] = (1024, 1024)  # (H, W) windows for mode=slide
    stride: tuple[int, int] = (768, 768)
    resize: tuple[int, int] | None = None  # (H, W) to run at; scores go back to label size
    scale: tuple[int, int] | None = None  # or (long, short) keeping the aspect (mmseg Resize)
    flip: bool = False
    num_workers: int = 0  # image decoding workers (inference itself is one image at a time)
    at_end: bool = True
    max_images: int = 0  # 0 = all; a cap for quick periodic evaluation during training
    overlays: int = 3  # image | prediction | ground truth panels written per target (0: none)
    classes: tuple[int, ...] | None = None  # train ids the means run over (SYNTHIA: 16)


@dataclass(frozen=True)
class Config:
    name: str = "experiment"
    task: Literal["seg", "det", "joint"] = "seg"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @property
    def out_dir(self) -> Path:
        return expand_path(self.train.out_dir.replace("${name}", self.name))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read ``path`` (following ``_base_``), apply ``key.sub=value`` overrides, validate."""
    raw = _read_with_bases(Path(path), seen=())
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    cfg = build(Config, raw, "")
    validate(cfg)
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    """``'train.iters=10'`` -> ``('train.iters', 10)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key.sub=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
    return key.strip(), value


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path}: _base_ cycle through {[str(p) for p in seen]}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: top level must be a mapping, got {type(raw).__name__}")
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: _base_ must be a file name or a list of them")
    merged: dict[str, Any] = {}
    for name in bases:
        merged = _merge(merged, _read_with_bases(path.parent / name, seen + (path.resolve(),)))
    return _merge(merged, raw)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; lists and scalars in ``top`` replace those in ``base``."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


# ----------------------------------------------------------------------------- typing


def build(cls: type, raw: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking every key and value type."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        near = difflib.get_close_matches(str(unknown[0]), names, n=1)
        prefix = f"{where}." if where else ""
        hint = f" (did you mean '{prefix}{near[0]}'?)" if near else f" (known: {', '.join(names)})"
        raise ConfigError(f"unknown config key '{key}'{hint}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and _required(f)]
    if missing:
        raise ConfigError(f"{where or 'config'}: missing required key '{missing[0]}'")
    return cls(**kwargs)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a type hint; errors name the key and what was expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where) if len(inner) == 1 else value
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"  # YAML 1.1 reads an unquoted off/on as a boolean
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is tuple:
        return _coerce_tuple(value, args, where)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, tp, where)


def _coerce_tuple(value: Any, args: tuple, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
    return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _coerce_scalar(value: Any, tp: type, where: str) -> Any:
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # PyYAML reads '1e-4' (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")


# ----------------------------------------------------------------------------- checks


def _range_checks(cfg: Config) -> list[tuple[str, Any, bool, str]]:
    """(key, value, ok, what is required) for every range the type hints cannot express."""
    t, d, e = cfg.train, cfg.data, cfg.eval
    positive = {"train.iters": t.iters, "train.lr": t.lr, "train.accum_steps": t.accum_steps,
                "train.checkpoint_every": t.checkpoint_every, "train.log_every": t.log_every,
                "data.batch_size": d.batch_size, "model.num_classes": cfg.model.num_classes}
    checks = [(k, v, v > 0, "> 0") for k, v in positive.items()]
    return checks + [
        ("eval.num_workers", e.num_workers, e.num_workers >= 0, ">= 0"),
        ("eval.overlays", e.overlays, e.overlays >= 0, ">= 0"),
        ("train.threads", t.threads, t.threads >= 0, ">= 0"),
        ("data.num_workers", d.num_workers, d.num_workers >= 0, ">= 0"),
        ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, ">= 0"),
        ("train.backbone_lr_mult", t.backbone_lr_mult, t.backbone_lr_mult >= 0, ">= 0"),
        ("train.warmup_iters", t.warmup_iters, 0 <= t.warmup_iters < t.iters,
         "in [0, train.iters)"),
        ("train.layer_decay", t.layer_decay, t.layer_decay is None or 0 < t.layer_decay <= 1,
         "in (0, 1] or null"),
        ("train.clip_grad", t.clip_grad, t.clip_grad is None or t.clip_grad > 0, "> 0 or null"),
        ("data.crop_size", d.crop_size, min(d.crop_size) > 0, "positive"),
        ("data.ratio_range", d.ratio_range,
         d.ratio_range is None or 0 < d.ratio_range[0] <= d.ratio_range[1],
         "0 < low <= high or null"),
        ("data.scale", d.scale, min(d.scale) > 0, "positive"),
        ("train.poly_begin", t.poly_begin, t.poly_begin is None or 0 <= t.poly_begin < t.iters - 1,
         "in [0, train.iters - 1) or null"),
        ("train.warmup_iters", t.warmup_iters, t.poly_begin is None or t.warmup_iters == 0,
         "0 with train.poly_begin (mmengine's PolyLR has no warm-up)"),
        ("data.cat_max_ratio", d.cat_max_ratio, 0 < d.cat_max_ratio <= 1, "in (0, 1]"),
        ("data.focus_prob", d.focus_prob, 0 <= d.focus_prob <= 1, "in [0, 1]"),
        ("data.focus_classes", d.focus_classes, all(0 <= c < 255 for c in d.focus_classes),
         "train ids in [0, 255)"),
        ("eval.crop_size", e.crop_size, min(e.crop_size) > 0, "positive"),
        ("eval.stride", e.stride, min(e.stride) > 0, "positive"),
        ("eval.targets", [s.title for s in e.targets],
         len({s.title for s in e.targets}) == len(e.targets), "unique labels"),
    ]


def validate(cfg: Config) -> None:
    """Range checks; the first violation is the error (``train.iters: must be > 0, got 0``)."""
    for key, value, ok, need in _range_checks(cfg):
        if not ok:
            raise ConfigError(f"{key}: must be {need}, got {value}")


def select_targets(cfg: Config, names: typing.Sequence[str]) -> Config:
    """Keep only the eval targets whose label is in ``names`` (``--targets fog night``)."""
    if not names:
        return cfg
    have = [s.title for s in cfg.eval.targets]
    unknown = [n for n in names if n not in have]
    if unknown:
        raise ConfigError(f"--targets: unknown target '{unknown[0]}' (config has: {have})")
    kept = tuple(s for s in cfg.eval.targets if s.title in names)
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, targets=kept))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view (tuples as lists) for YAML dumps, checkpoint meta and Tensorboard."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))
