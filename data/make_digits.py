"""Write `digits.pt`, minddpm's bundled dataset, from scikit-learn's copy of the UCI digits.

Run once from the repo root: `pip install scikit-learn && python data/make_digits.py`.
minddpm itself never needs scikit-learn: it reads the file this script writes.
"""
from pathlib import Path
import torch

def make_digits():
    "The 1,797 8×8 digits as uint8 images (N, 1, 8, 8), ink bright on black, with int64 labels."
    from sklearn.datasets import load_digits
    d = load_digits()
    ink = torch.as_tensor(d.images, dtype=torch.float64)          # (N, 8, 8), 17 grey levels 0..16
    images = (ink * 255 / 16).round().to(torch.uint8)[:, None]    # 16 → 255, like MNIST's ink
    return dict(images=images, labels=torch.as_tensor(d.target, dtype=torch.int64),
                classes=[str(c) for c in d.target_names])

if __name__ == '__main__':
    out = Path(__file__).parent/'digits.pt'
    torch.save(make_digits(), out)
    print(f'wrote {out} ({out.stat().st_size:,} bytes)')
