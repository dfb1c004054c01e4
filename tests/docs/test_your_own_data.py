"""The guide docs/your_own_data.md ("Your own COCO-format dataset"), run as written on the CPU.

The yaml and the command are read from the guide itself (after their ``<!-- mydata-... -->``
markers), on a small dataset with category ids 1, 3 and 7 written by the test. The only changes are
the ones a user makes: their own paths. The run is also shortened (``SOLVER.MAX_ITER``) to keep the
test fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from tests.helpers import REPO_ROOT, shapes_image, write_image

CATEGORY_IDS = (1, 3, 7)


GUIDE = os.path.join(REPO_ROOT, "docs", "your_own_data.md")


def guide_block(marker: str) -> str:
    """The first fenced code block after ``<!-- marker -->`` in the guide."""
    with open(GUIDE, encoding="utf-8") as f:
        text = f.read()
    after = text[text.index(f"<!-- {marker} -->") :]
    return re.search(r"```\w*\n(.*?)```", after, re.S).group(1)


def write_dataset(root, split: str, num_images: int, seed: int) -> None:
    """COCO json + PNGs: 1-3 coloured rectangles per image, category ids 1, 3, 7 by colour."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"kind{c}"} for c in CATEGORY_IDS]}
    os.makedirs(root / "images", exist_ok=True)
    for image_id in range(1, num_images + 1):
        h, w = int(rng.integers(120, 200)), int(rng.integers(120, 200))
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = int(rng.integers(w // 5, w // 2)), int(rng.integers(h // 5, h // 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            boxes.append((x0, y0, x0 + bw, y0 + bh))
        name = f"{split}_{image_id}.png"
        write_image(str(root / "images" / name), shapes_image(h, w, boxes, seed=seed * 1000 + image_id))
        coco["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        for i, (x0, y0, x1, y1) in enumerate(boxes):  # shapes_image colours by position: class by position
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[i % 3],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })  # fmt: skip
    (root / f"{split}.json").write_text(json.dumps(coco))


def test_your_own_data_guide_trains_and_evaluates_on_the_cpu(tmp_path):
    data = tmp_path / "mydata"
    write_dataset(data, "train", 6, seed=1)
    write_dataset(data, "val", 3, seed=2)
    yaml = guide_block("mydata-yaml").replace("/data/mydata", str(data))
    base = re.search(r'_BASE_: "(.*?)"', yaml).group(1)  # relative to the configs/ folder the guide saves it in
    yaml = yaml.replace(base, os.path.join(REPO_ROOT, "configs", base))
    os.makedirs(tmp_path / "configs")
    (tmp_path / "configs" / "mydata.yaml").write_text(yaml)
    command = shlex.split(guide_block("mydata-command").strip())
    assert command[:2] == ["python", "tools/train_net.py"]
    command = [sys.executable, os.path.join(REPO_ROOT, command[1]), *command[2:]]
    command += ["SOLVER.MAX_ITER", "12", "SOLVER.WARMUP_ITERS", "2"]  # shorter, for the test
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "output" / "mydata"
    with open(out / "config.yaml") as f:
        assert "NUM_CLASSES: 3" in f.read()  # 0 in the yaml: taken from the training json
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    evaluation = [r for r in rows if "bbox/AP" in r]
    assert evaluation  # COCOEvaluator ran on mydata_val (12 iterations predict nothing yet: AP is NaN)
    assert (out / "model_final.pth").exists()
