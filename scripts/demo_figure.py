"""The README's demo figure: one evaluation overlay (image | prediction | ground truth) per
domain from a `vltseg demo` run, stacked and palette-quantised to stay under 300 kB.

    vltseg demo && python scripts/demo_figure.py                 # runs/demo -> docs/demo_overlay.png
    python scripts/demo_figure.py --run runs/demo --domains clear night --index 1 --out docs/demo_overlay.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def overlay(run: Path, domain: str, index: int) -> Image.Image:
    """Panel ``index`` of ``domain`` under ``run/eval/<row>/<domain>/overlays``."""
    found = sorted(run.glob(f"eval/*/{domain}/overlays/{index:02d}_*.png"))
    if not found:
        raise SystemExit(f"no overlay {index:02d}_*.png for {domain} under {run / 'eval'}; run `vltseg demo` first")
    return Image.open(found[0]).convert("RGB")


def figure(run: Path, domains: list[str], index: int, scale: float) -> Image.Image:
    rows = []
    for domain in domains:
        panel = overlay(run, domain, index)
        panel = panel.resize((round(panel.width * scale), round(panel.height * scale)), Image.BILINEAR)
        draw = ImageDraw.Draw(panel)
        draw.rectangle((0, 0, 8 + 7 * len(domain), 14), fill=(0, 0, 0))
        draw.text((4, 1), domain, fill=(255, 255, 255))
        rows.append(np.asarray(panel))
    return Image.fromarray(np.concatenate(rows, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--domains", nargs="+", default=["clear", "night"])
    parser.add_argument("--index", type=int, default=1, help="overlay number within each domain")
    parser.add_argument("--scale", type=float, default=0.75)
    parser.add_argument("--out", type=Path, default=Path("docs/demo_overlay.png"))
    args = parser.parse_args()
    image = figure(args.run, args.domains, args.index, args.scale)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.out, optimize=True)
    print(f"{args.out}: {image.width}x{image.height}, {args.out.stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
