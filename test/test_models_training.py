"""Training behaviour: gradients reach every encoder block, freezing, optimizer groups,
overfitting tiny presets on generated images, checkpoint round trips, summaries."""

from __future__ import annotations

import io
import os
import statistics

import pytest
import torch

from vltseg_core.models import (
    build_from_preset,
    build_model,
    count_flops,
    get_preset,
    load_checkpoint,
    model_summary,
    param_groups,
    print_model_table,
    save_checkpoint,
)

COLORS = torch.tensor([[40.0, 90, 40], [200, 60, 60], [60, 60, 210]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scenes(n: int, h: int, w: int, seed: int = 1) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Noisy images of coloured rectangles: class 0 background, classes 1/2 rectangles.
    Targets carry ``sem_seg`` and one box per rectangle (labels = class - 1 for detection)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        sem = torch.zeros(h, w, dtype=torch.long)
        boxes, labels = [], []
        for cls in (1, 2):
            bh, bw = (int(torch.randint(h // 5, h * 2 // 5, (1,), generator=g)) for _ in range(2))
            y0 = int(torch.randint(0, h - bh, (1,), generator=g))
            x0 = int(torch.randint(0, w - bw, (1,), generator=g))
            sem[y0:y0 + bh, x0:x0 + bw] = cls
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            labels.append(cls - 1)
        images.append((COLORS[sem].permute(2, 0, 1) + 20 * torch.randn(3, h, w, generator=g)).clamp(0, 255))
        targets.append({"sem_seg": sem, "boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels)})
    return torch.stack(images), targets


def _train(model, images, targets, steps: int, lr: float) -> list[float]:
    opt = torch.optim.AdamW(param_groups(model, lr, 1e-4, backbone_lr_mult=1.0), lr=lr)
    x = model.preprocess(images)
    history = []
    model.train()
    for _ in range(steps):
        loss = sum(model(x, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def test_every_encoder_block_gets_gradient() -> None:
    torch.manual_seed(0)
    model = build_model("vltseg_tiny_joint", num_classes=3, depth=5, out_indices=(1, 2, 3, 4))  # 0 not an output
    images, targets = _scenes(2, 64, 96)
    sum(model.train()(model.preprocess(images), targets).values()).backward()
    trunk = model.encoder.trunk
    for i, block in enumerate(trunk.blocks):
        grads = [p.grad for p in block.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), f"block {i}"
    assert trunk.patch_embed.proj.weight.grad.abs().sum() > 0 and trunk.pos_embed.grad is not None


def test_freeze_blocks_excluded_from_optimizer() -> None:
    torch.manual_seed(0)
    k = 2
    model = build_model("vltseg_tiny_m2f", num_classes=3, freeze_blocks=k)
    trunk = model.encoder.trunk
    frozen = [*trunk.patch_embed.parameters(), trunk.pos_embed, trunk.cls_token, *trunk.norm_pre.parameters()]
    frozen += [p for b in trunk.blocks[:k] for p in b.parameters()]
    before = [p.detach().clone() for p in frozen]
    groups = param_groups(model, 1e-3, 0.05)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not in_groups & {id(p) for p in frozen}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert in_groups == {id(p) for p in trainable}
    images, targets = _scenes(2, 64, 96)
    sum(model.train()(model.preprocess(images), targets).values()).backward()
    assert all(p.grad is None for p in frozen)
    for block in trunk.blocks[k:]:
        assert all(p.grad is not None and p.requires_grad for p in block.parameters())
    opt = torch.optim.AdamW(groups)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, frozen))


def test_param_groups_lr_and_weight_decay() -> None:
    model = build_model("vltseg_tiny_m2f", num_classes=3)
    lr, wd = 1e-4, 0.05
    groups = param_groups(model, lr, wd, backbone_lr_mult=0.1, layer_decay=0.8)
    by_param = {id(p): g for g in groups for p in g["params"]}
    trunk = model.encoder.trunk
    block_lrs = [by_param[id(b.attn.qkv.weight)]["lr"] for b in trunk.blocks]
    depth = len(block_lrs)
    assert block_lrs == pytest.approx([lr * 0.1 * 0.8 ** (depth - i) for i in range(depth)])
    assert by_param[id(trunk.patch_embed.proj.weight)]["lr"] == pytest.approx(lr * 0.1 * 0.8 ** (depth + 1))
    decoder = model.seg_head.decoder
    assert by_param[id(decoder.class_embed.weight)]["lr"] == lr
    for p in (trunk.pos_embed, trunk.cls_token, trunk.blocks[0].norm1.weight, decoder.query_feat.weight,
              decoder.class_embed.bias, model.seg_head.pixel_decoder.level_embed):
        assert by_param[id(p)]["weight_decay"] == 0.0
    assert by_param[id(decoder.class_embed.weight)]["weight_decay"] == wd
    no_layer_decay = param_groups(model, lr, wd)
    assert sorted({g["lr"] for g in no_layer_decay}) == pytest.approx([lr * 0.1, lr])


def test_overfit_tiny_segmentation() -> None:
    torch.manual_seed(0)
    images, targets = _scenes(4, 64, 96)
    model = build_model("vltseg_tiny_m2f", num_classes=3)
    history = _train(model, images, targets, steps=40, lr=1e-3)
    with torch.no_grad():
        pred = model.eval()(model.preprocess(images)).sem_seg.argmax(1)
    accuracy = (pred == torch.stack([t["sem_seg"] for t in targets])).float().mean().item()
    assert accuracy >= 0.9, (accuracy, history[::10])


def test_overfit_tiny_detection() -> None:
    torch.manual_seed(0)
    images, targets = _scenes(4, 64, 96)
    model = build_model("vltseg_tiny_det", num_classes=2)
    history = _train(model, images, targets, steps=80, lr=2e-3)
    start, end = statistics.mean(history[:3]), statistics.mean(history[-5:])
    assert start / end >= 5, (start, end, history[::10])
    with torch.no_grad():
        det = model.eval()(model.preprocess(images)).detections
    assert det[0]["boxes"].shape[0] >= 1 and det[0]["scores"].max() > 0.5


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    images, targets = _scenes(2, 64, 96)
    model = build_model("vltseg_tiny_joint", num_classes=3, num_queries=8)
    _train(model, images, targets, steps=2, lr=1e-3)  # move away from the init
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(model, path, meta={"classes": ["bg", "red", "blue"], "iter": 2})
    assert os.listdir(path.parent) == ["model.pt"]  # temp file replaced atomically
    payload = torch.load(path, weights_only=True)
    assert {"preset", "num_classes", "model", "meta"} <= payload.keys()
    loaded, meta = load_checkpoint(path)
    rebuilt = build_model("vltseg_tiny_joint", num_classes=3, checkpoint=path, num_queries=8)
    assert meta["classes"] == ["bg", "red", "blue"] and loaded.seg_head.decoder.query_feat.num_embeddings == 8
    x = model.preprocess(images)
    with torch.no_grad():
        ref = model.eval()(x)
        for other in (loaded.eval()(x), rebuilt.eval()(x)):
            assert torch.equal(ref.sem_seg, other.sem_seg)
            for a, b in zip(ref.detections, other.detections):
                assert all(torch.equal(a[k], b[k]) for k in ("boxes", "scores", "labels"))
    with pytest.raises(RuntimeError):  # strict: another architecture does not load silently
        build_model("vltseg_tiny_joint", num_classes=3, checkpoint=path)


def test_checkpoint_round_trip_custom_preset(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(get_preset("vltseg_tiny_eva02_m2f", num_queries=4, dec_layers=2), num_classes=2)
    save_checkpoint(model, tmp_path / "m.pt")
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model.eval()(x).sem_seg, loaded.eval()(x).sem_seg)
    assert meta == {} and loaded.seg_head.decoder.num_layers == 2


def test_model_summary_and_table() -> None:
    tiny = model_summary("vltseg_tiny_m2f")
    model = build_model("vltseg_tiny_m2f", num_classes=19)
    assert tiny["params_m"] * 1e6 == pytest.approx(sum(p.numel() for p in model.parameters()))
    assert 0.05 < tiny["gflops"] < 5
    full = model_summary("vltseg_clip_b16_m2f", (512, 1024))  # meta device: no compute
    assert 100 < full["params_m"] < 130 and full["encoder_params_m"] == pytest.approx(85.8, abs=0.5)
    assert full["gflops"] > 300
    with torch.device("meta"):
        on_meta = build_from_preset(get_preset("vltseg_tiny_m2f"), 19)
    assert count_flops(model, (64, 96)) == count_flops(on_meta, (64, 96))  # fused CPU attention counted
    out = io.StringIO()
    rows = print_model_table(["vltseg_tiny_m2f", "vltseg_tiny_eva02_m2f"], file=out)
    assert len(rows) == 2 and "vltseg_tiny_eva02_m2f" in out.getvalue() and "GFLOPs" in out.getvalue()
