"""Write a small synthetic image set in the production layout (`python -m qc_assets.cli.sample_data DIR`).

Three missions, pass and fail groups, one resubmission (the same group id under both labels), a few
unlabelled groups waiting in each mission's inbox folder (`待审核`), images of different sizes, and a
few bad files that Stage-A must list rather than choke on. The pass/fail
difference is drawn visibly (a yellow-green ground wire present or missing, blanking plates present
or missing, RRU bolts present or missing), so a real VLM could tell them apart.
"""

from __future__ import annotations

import io
import random
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from qc_assets.stage_a.discovery import INBOX_FOLDER
from resources.store import atomic_write_bytes

SIZES = [(320, 240), (240, 320), (400, 300), (256, 256)]


def _cabinet(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.rectangle([w * 0.15, h * 0.08, w * 0.85, h * 0.92], fill=(60, 60, 66), outline=(20, 20, 20), width=3)
    draw.rectangle([w * 0.22, h * 0.2, w * 0.78, h * 0.36], fill=(180, 180, 190))  # the BBU
    for i in range(4):
        x = w * (0.27 + 0.12 * i)
        draw.rectangle([x, h * 0.25, x + w * 0.06, h * 0.3], fill=(30, 120, 200))  # ports


def draw_ground_wire(img: Image.Image, passed: bool) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    _cabinet(draw, w, h)
    if passed:  # yellow-green striped wire from the BBU terminal down to the ground bar
        points = [(w * 0.74, h * 0.36), (w * 0.8, h * 0.6), (w * 0.7, h * 0.85)]
        draw.line(points, fill=(40, 170, 40), width=7)
        draw.line(points, fill=(230, 210, 20), width=3)
    draw.rectangle([w * 0.5, h * 0.84, w * 0.82, h * 0.88], fill=(200, 150, 60))  # ground bar


def draw_blanking_plates(img: Image.Image, passed: bool) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    _cabinet(draw, w, h)
    for slot in range(3):
        y = h * (0.45 + 0.14 * slot)
        box = [w * 0.22, y, w * 0.78, y + h * 0.1]
        if passed or slot == 0:
            draw.rectangle(box, fill=(150, 150, 155), outline=(90, 90, 90), width=2)
        else:  # an empty slot: a dark hole
            draw.rectangle(box, fill=(5, 5, 5))


def draw_rru(img: Image.Image, passed: bool) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, h], fill=(150, 190, 230))  # sky
    draw.rectangle([w * 0.46, 0, w * 0.54, h], fill=(120, 120, 120))  # pole
    draw.rectangle([w * 0.3, h * 0.3, w * 0.7, h * 0.7], fill=(210, 210, 215), outline=(60, 60, 60), width=3)
    if passed:
        for y in (0.33, 0.67):
            for x in (0.33, 0.67):
                draw.ellipse([w * x - 5, h * y - 5, w * x + 5, h * y + 5], fill=(20, 20, 20))


MISSION_DRAWERS = {
    "BBU接地线检查": draw_ground_wire,
    "挡风板安装检查": draw_blanking_plates,
    "RRU安装检查": draw_rru,
}


def _background(rng: random.Random) -> tuple[int, int, int]:
    """A slightly different wall colour per photo, so no two photos of a group are byte-identical."""
    return tuple(rng.randint(200, 245) for _ in range(3))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_sample_images(
    root: str | Path, seed: int = 7, groups_per_label: int = 3, inbox_groups: int = 2, reviewed_groups: int = 0
) -> Path:
    """Write the set under `root`; files that already exist are left as they are (a re-run is a no-op).

    `inbox_groups` unlabelled groups per mission go under `<mission>/待审核/` (alternately drawn as a
    passing and a failing installation), for qc_verdicts to judge. `reviewed_groups` more (R600...)
    go both to the inbox and, with the same photos, to the label folder a reviewer would file them
    under: `review_sample_inbox` then plays the reviewer by taking the inbox copies away, so the
    review loop and the drift watch have reviews to count without new training data appearing later.
    """
    root = Path(root)
    rng = random.Random(seed)
    for mission, draw in MISSION_DRAWERS.items():
        for label_folder, passed in (("审核通过", True), ("审核不通过", False)):
            for g in range(groups_per_label):
                group_dir = root / mission / label_folder / f"G{100 + g + (0 if passed else 50)}"
                for i in range(1, rng.randint(2, 3) + 1):
                    img = Image.new("RGB", rng.choice(SIZES), _background(rng))
                    draw(img, passed)
                    _write_once(group_dir / f"{i}.jpg", _jpeg(img))
        # a resubmission: the same group id failed first, then passed
        for label_folder, passed in (("审核不通过", False), ("审核通过", True)):
            img = Image.new("RGB", (320, 240), (235, 235, 230))
            draw(img, passed)
            _write_once(root / mission / label_folder / "G900" / "1.jpg", _jpeg(img))
        # a generator of its own, so adding inbox groups never changes the labelled photos
        inbox_rng = random.Random(f"{seed}:inbox:{mission}")
        for g in range(inbox_groups):
            for i in range(1, inbox_rng.randint(1, 2) + 1):
                img = Image.new("RGB", inbox_rng.choice(SIZES), _background(inbox_rng))
                draw(img, g % 2 == 0)
                _write_once(root / mission / INBOX_FOLDER / f"N{500 + g}" / f"{i}.jpg", _jpeg(img))

        reviewed_rng = random.Random(f"{seed}:reviewed:{mission}")
        for g in range(reviewed_groups):
            passed = g % 2 == 0
            filed = root / mission / ("审核通过" if passed else "审核不通过") / f"R{600 + g}"
            # the inbox copy first: once the filed copy exists, a reviewer has taken the group out
            fresh = not filed.exists()
            for i in range(1, 3):
                img = Image.new("RGB", reviewed_rng.choice(SIZES), _background(reviewed_rng))
                draw(img, passed)
                data = _jpeg(img)
                if fresh:
                    _write_once(root / mission / INBOX_FOLDER / f"R{600 + g}" / f"{i}.jpg", data)
                _write_once(filed / f"{i}.jpg", data)

    # Bad files, all in the first mission: each must show up in Stage-A's skipped list with a reason.
    first = root / "BBU接地线检查" / "审核不通过" / "G150"
    _write_once(first / "10.jpg", b"")  # zero-byte
    good = (first / "1.jpg").read_bytes()
    _write_once(first / "11.jpg", good[: len(good) // 2])  # truncated JPEG
    _write_once(first / "说明.txt", "现场备注：这不是图片。".encode())  # a text file
    unicode_img = Image.new("RGB", (200, 150), (235, 235, 230))
    draw_ground_wire(unicode_img, False)
    _write_once(first / "机柜照片_2.PNG", _png(unicode_img))  # unicode name, upper-case suffix: usable
    _write_once(root / "BBU接地线检查" / "审核通过" / "stray.jpg", good)  # outside a group folder
    return root


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_once(path: Path, data: bytes) -> None:
    if not path.exists():
        atomic_write_bytes(path, data)


def review_sample_inbox(root: str | Path) -> list[str]:
    """Play the reviewer: every inbox group whose photos are already filed under a label folder (the
    R6xx groups) leaves the inbox. Returns `<mission>/<group>` of the groups reviewed now."""
    reviewed = []
    for inbox_group in sorted(Path(root).glob(f"*/{INBOX_FOLDER}/R*")):
        mission_dir = inbox_group.parent.parent
        if any((mission_dir / label / inbox_group.name).is_dir() for label in ("审核通过", "审核不通过")):
            shutil.rmtree(inbox_group)
            reviewed.append(f"{mission_dir.name}/{inbox_group.name}")
    return reviewed


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "data/images"
    # the demo's set: four groups per mission for the review loop (see review_sample_inbox)
    print(f"sample images in {write_sample_images(target, reviewed_groups=4)}")
