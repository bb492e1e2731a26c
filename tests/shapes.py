"""Image folders of coloured shapes, made on the spot: data nobody tuned a recipe for.

    python tests/shapes.py OUT [--kinds circle square triangle cross] [--per-class 400] [--size 16] [--seed 0]

Each class is one kind of shape, drawn at a random position, size and turn in a random saturated colour on a
random background of another brightness, rendered at 4× and reduced with a box filter (soft edges, as a photo of
a shape would have). `KINDS` holds eight; the benchmarks use two disjoint sets of four, so a recipe chosen on one
set can be checked on the other."""
import argparse, colorsys, math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ('circle', 'square', 'triangle', 'cross', 'ring', 'diamond', 'bar', 'x')
SETS = {'shapes': ('circle', 'square', 'triangle', 'cross'), 'shapes2': ('ring', 'diamond', 'bar', 'x')}

def _polygon(points, cx, cy, r, turn):
    "Points given on the unit circle's scale, turned by `turn` radians, scaled by r and moved to (cx, cy)."
    c, s = math.cos(turn), math.sin(turn)
    return [(cx + r * (c * x - s * y), cy + r * (s * x + c * y)) for x, y in points]

def _draw(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, turn: float, fill):
    if kind == 'circle': d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == 'ring':
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, round(0.3 * r)))
    elif kind == 'square': d.polygon(_polygon([(-.8, -.8), (.8, -.8), (.8, .8), (-.8, .8)], cx, cy, r, turn % (math.pi / 8)), fill=fill)
    elif kind == 'diamond': d.polygon(_polygon([(0, -1.1), (.7, 0), (0, 1.1), (-.7, 0)], cx, cy, r, 0), fill=fill)
    elif kind == 'triangle':
        d.polygon(_polygon([(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)], cx, cy, r, turn), fill=fill)
    elif kind == 'bar': d.polygon(_polygon([(-1.1, -.35), (1.1, -.35), (1.1, .35), (-1.1, .35)], cx, cy, r, turn % (math.pi / 8)), fill=fill)
    elif kind in ('cross', 'x'):
        arm = [(-1, -.34), (1, -.34), (1, .34), (-1, .34)]
        base = (math.pi / 4 if kind == 'x' else 0) + turn % (math.pi / 12)
        for a in (base, base + math.pi / 2): d.polygon(_polygon(arm, cx, cy, r, a), fill=fill)
    else: raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")

def shape_image(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    "One `size`×`size` RGB image of `kind`."
    k = 4 * size
    hue, bg_hue = rng.random(), rng.random()
    light = rng.random() < 0.5                                     # a light shape on a dark ground, or the other way
    fg = colorsys.hsv_to_rgb(hue, rng.uniform(.6, 1), rng.uniform(.75, 1) if light else rng.uniform(.25, .5))
    bg = colorsys.hsv_to_rgb(bg_hue, rng.uniform(0, .6), rng.uniform(0, .3) if light else rng.uniform(.75, 1))
    img = Image.new('RGB', (k, k), tuple(round(255 * v) for v in bg))
    r = rng.uniform(.28, .4) * k
    cx, cy = rng.uniform(r + 1, k - r - 1, size=2)
    _draw(ImageDraw.Draw(img), kind, cx, cy, r, rng.uniform(0, 2 * math.pi), tuple(round(255 * v) for v in fg))
    return img.resize((size, size), Image.BOX)

def make_shapes(root,                     # the folder to write: one sub-folder of PNGs per kind
                kinds=SETS['shapes'],     # the classes, names from `KINDS`
                per_class: int = 400,     # images of each class
                size: int = 16,           # image side in pixels
                seed: int = 0,            # seeds every draw: the same arguments write the same files
                ) -> Path:
    "Write an image folder of coloured shapes; returns its path."
    root, rng = Path(root), np.random.default_rng(seed)
    for kind in kinds:
        (root/kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class): shape_image(kind, size, rng).save(root/kind/f'{i:04d}.png')
    return root

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out')
    p.add_argument('--kinds', nargs='+', default=list(SETS['shapes']), choices=KINDS)
    p.add_argument('--per-class', type=int, default=400)
    p.add_argument('--size', type=int, default=16)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    print(make_shapes(a.out, a.kinds, a.per_class, a.size, a.seed))
