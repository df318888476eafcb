"""Draw the project's own small sample dataset in the 100SIC layout (deterministic).

    python scripts/make_sample_data.py [OUT]        # default: sample_data/ beside this script

Six sports whose names match the real 100SIC labels (two with spaces), 224x224 RGB JPEGs,
train 8 / valid 4 / test 4 per sport, `sports.csv` in the 100SIC format, and `captions.jsonl`
with a caption for every train image, written from what was drawn. Every image has its own
seed (sport, split, index), so positions, colours, counts and poses vary between images while a
re-run draws the same pictures. `fewshot_captions.jsonl` is hand-written and not touched here.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 224
SPLITS = {"train": 8, "valid": 4, "test": 4}
JPEG_QUALITY = 82

# Colours with the names the captions use.
COLOURS = {
    "red": (206, 38, 44),
    "blue": (34, 86, 196),
    "green": (40, 150, 60),
    "yellow": (240, 200, 30),
    "orange": (240, 128, 24),
    "purple": (120, 56, 160),
    "black": (28, 28, 32),
    "white": (244, 244, 240),
    "pink": (236, 120, 170),
    "teal": (24, 150, 150),
}
SKIN = [(241, 194, 160), (224, 172, 120), (198, 134, 90), (141, 85, 54), (92, 56, 36)]
COUNT_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def pick_colours(rng: random.Random, n: int, exclude: tuple[str, ...] = ()) -> list[str]:
    names = [c for c in COLOURS if c not in exclude]
    return rng.sample(names, n)


def jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 14) -> tuple:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in rgb)


def gradient(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], top: tuple,
             bottom: tuple) -> None:
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        t = (y - y0) / max(1, y1 - y0 - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(x0, y), (x1, y)], fill=colour)


def person(draw: ImageDraw.ImageDraw, x: float, feet_y: float, height: float, shirt: tuple,
           rng: random.Random, *, lean: float = 0.0, arms: tuple[float, float] | None = None,
           legs_apart: float = 0.25, trousers: tuple = (40, 40, 60)) -> tuple[float, float]:
    """A stick person; `lean` tilts the body (radians, + leans right); returns the hands' point.

    `arms` gives the two arm angles in radians measured from straight down (+ towards right).
    """
    skin = rng.choice(SKIN)
    leg = height * 0.45
    torso = height * 0.33
    head_r = height * 0.1
    hip = (x + math.sin(lean) * leg * 0.2, feet_y - leg * math.cos(lean * 0.3))
    w = max(2, round(height * 0.07))
    for side in (-1, 1):
        draw.line([hip, (x + side * legs_apart * leg, feet_y)], fill=trousers, width=w)
    neck = (hip[0] + math.sin(lean) * torso, hip[1] - math.cos(lean) * torso)
    draw.line([hip, neck], fill=shirt, width=max(3, round(height * 0.14)))
    head = (neck[0] + math.sin(lean) * head_r * 1.2, neck[1] - math.cos(lean) * head_r * 1.2)
    draw.ellipse([head[0] - head_r, head[1] - head_r, head[0] + head_r, head[1] + head_r],
                 fill=skin)
    shoulder = (hip[0] + math.sin(lean) * torso * 0.85, hip[1] - math.cos(lean) * torso * 0.85)
    arm = height * 0.32
    a1, a2 = arms if arms is not None else (rng.uniform(-0.5, -0.1), rng.uniform(0.1, 0.5))
    hands = []
    for ang in (a1, a2):
        hand = (shoulder[0] + math.sin(ang) * arm, shoulder[1] + math.cos(ang) * arm)
        draw.line([shoulder, hand], fill=shirt, width=w)
        draw.ellipse([hand[0] - w, hand[1] - w, hand[0] + w, hand[1] + w], fill=skin)
        hands.append(hand)
    return hands[0]


def where(x: float) -> str:
    if x < SIZE * 0.38:
        return "on the left"
    return "on the right" if x > SIZE * 0.62 else "in the centre"


def a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


# --- one function per sport: draw on `im`, return the caption -------------------------------

def air_hockey(im: Image.Image, rng: random.Random) -> str:
    d = ImageDraw.Draw(im)
    gradient(d, (0, 0, SIZE, SIZE), jitter((40, 44, 60), rng), jitter((20, 22, 30), rng))
    rail_name = rng.choice(["red", "blue", "black", "purple", "teal"])
    m = rng.randint(8, 22)
    tilt = rng.randint(-10, 10)
    d.rounded_rectangle([m, m + 20 + tilt, SIZE - m, SIZE - m - 20 + tilt], radius=22,
                        fill=COLOURS[rail_name])
    surf = [m + 9, m + 29 + tilt, SIZE - m - 9, SIZE - m - 29 + tilt]
    d.rounded_rectangle(surf, radius=16, fill=jitter((226, 236, 246), rng, 8))
    for y in range(surf[1] + 8, surf[3] - 4, 12):  # air holes
        for x in range(surf[0] + 8, surf[2] - 4, 12):
            d.point((x, y), fill=(170, 180, 195))
    cx, cy = SIZE // 2, (surf[1] + surf[3]) // 2
    d.line([(cx, surf[1]), (cx, surf[3])], fill=(210, 40, 40), width=3)
    d.ellipse([cx - 24, cy - 24, cx + 24, cy + 24], outline=(210, 40, 40), width=2)
    for gx in (surf[0] - 4, surf[2] - 4):
        d.rectangle([gx, cy - 22, gx + 8, cy + 22], fill=(20, 20, 20))
    c1, c2 = pick_colours(rng, 2, exclude=("white", "black", rail_name))
    for name, x0, x1 in ((c1, surf[0] + 22, cx - 22), (c2, cx + 22, surf[2] - 22)):
        x, y = rng.randint(x0, x1), rng.randint(surf[1] + 22, surf[3] - 22)
        d.ellipse([x - 17, y - 17, x + 17, y + 17], fill=COLOURS[name], outline=(30, 30, 30))
        d.ellipse([x - 7, y - 7, x + 7, y + 7], fill=jitter(COLOURS[name], rng, 40))
    puck = rng.choice(["black", "red", "yellow"])
    px, py = rng.randint(surf[0] + 15, surf[2] - 15), rng.randint(surf[1] + 12, surf[3] - 12)
    d.ellipse([px - 8, py - 8, px + 8, py + 8], fill=COLOURS[puck])
    return (f"An air hockey table with {rail_name} rails seen from above, {a(c1)} mallet and"
            f" {c2} mallet on either side and {a(puck)} puck {where(px)}.")


def tug_of_war(im: Image.Image, rng: random.Random) -> str:
    d = ImageDraw.Draw(im)
    horizon = rng.randint(80, 110)
    gradient(d, (0, 0, SIZE, horizon), jitter((120, 170, 230), rng), jitter((200, 225, 245), rng))
    gradient(d, (0, horizon, SIZE, SIZE), jitter((90, 160, 70), rng), jitter((50, 120, 40), rng))
    feet = rng.randint(175, 200)
    rope_y = feet - rng.randint(45, 55)
    centre = SIZE // 2 + rng.randint(-25, 25)
    d.line([(centre, horizon + 10), (centre, SIZE)], fill=(240, 240, 240), width=2)
    d.line([(0, rope_y), (SIZE, rope_y + rng.randint(-6, 6))], fill=(150, 110, 60), width=4)
    c1, c2 = pick_colours(rng, 2, exclude=("green", "white"))
    n1, n2 = rng.randint(2, 4), rng.randint(2, 4)
    for side, n, name in ((-1, n1, c1), (1, n2, c2)):
        for k in range(n):
            x = centre + side * (22 + k * rng.randint(20, 26))
            lean = side * rng.uniform(0.35, 0.6)  # leaning away from the centre line
            reach = -side * 1.45
            person(d, x, feet + rng.randint(-3, 3), rng.randint(60, 72), COLOURS[name], rng,
                   lean=lean, arms=(reach, reach + side * 0.15), legs_apart=0.35)
    d.rectangle([centre - 3, rope_y - 2, centre + 3, rope_y + 14], fill=(220, 30, 30))
    leader = c1 if n1 > n2 else c2 if n2 > n1 else None
    extra = f"; the {leader} side has more people" if leader else ""
    return (f"A tug of war on green grass: {COUNT_WORDS[n1]} people in {c1} pull a rope against"
            f" {COUNT_WORDS[n2]} in {c2}, with a red marker at the middle{extra}.")


def archery(im: Image.Image, rng: random.Random) -> str:
    d = ImageDraw.Draw(im)
    horizon = rng.randint(90, 130)
    gradient(d, (0, 0, SIZE, horizon), jitter((135, 185, 235), rng), jitter((215, 230, 245), rng))
    for _ in range(rng.randint(3, 6)):  # tree line
        tx = rng.randint(0, SIZE)
        r = rng.randint(14, 28)
        d.ellipse([tx - r, horizon - r * 1.5, tx + r, horizon + 4], fill=jitter((40, 100, 50), rng))
    gradient(d, (0, horizon, SIZE, SIZE), jitter((110, 170, 80), rng), jitter((70, 130, 50), rng))
    archer = rng.random() < 0.5
    r = rng.randint(42, 62)
    # With an archer the target moves right to leave the archer room on the left.
    tx = rng.randint(SIZE // 2 + 10, SIZE - r - 6) if archer else rng.randint(r + 10, SIZE - r - 10)
    ty = rng.randint(r + 12, min(SIZE - r - 30, horizon + 20))
    d.polygon([(tx - r * 0.7, ty + r * 1.7), (tx, ty), (tx + r * 0.7, ty + r * 1.7)],
              outline=(120, 80, 40), width=5)
    rings = [(245, 245, 245), (30, 30, 30), (40, 110, 210), (215, 40, 40), (250, 210, 30)]
    for k, colour in enumerate(rings):
        rr = r * (1 - k / len(rings))
        d.ellipse([tx - rr, ty - rr, tx + rr, ty + rr], fill=colour, outline=(90, 90, 90))
    n = rng.randint(1, 4)
    near = 0
    fletch = COLOURS[rng.choice(["red", "green", "orange", "pink", "purple"])]
    for _ in range(n):
        dist = r * rng.uniform(0, 0.85)
        near += dist < r * 0.4
        ang = rng.uniform(0, 2 * math.pi)
        ax, ay = tx + math.cos(ang) * dist, ty + math.sin(ang) * dist
        shaft = rng.uniform(0.8, 1.1)
        bx, by = ax - 34 * shaft, ay + 12 * shaft
        d.line([(ax, ay), (bx, by)], fill=(70, 45, 20), width=3)
        d.polygon([(bx + 3, by - 1), (bx - 9, by - 8), (bx - 6, by + 5)], fill=fletch)
    caption = ("A round archery target with yellow, red and blue rings on a grass range, hit by"
               f" {COUNT_WORDS[n]} arrow{'s' if n > 1 else ''}")
    if near:
        which = f", {COUNT_WORDS[near]}" if n > 1 else ""
        caption += f"{which} close to the bullseye"
    if archer:
        shirt = rng.choice(["red", "blue", "purple", "black", "orange"])
        ax, feet = rng.randint(28, 55), rng.randint(190, 212)
        hand = person(d, ax, feet, rng.randint(80, 95), COLOURS[shirt], rng, arms=(1.5, 1.7))
        hx, hy = hand
        d.arc([hx + 4, hy - 32, hx + 28, hy + 32], start=-80, end=80, fill=(110, 70, 30), width=3)
        d.line([(hx + 18, hy - 31), (hx + 2, hy), (hx + 18, hy + 31)], fill=(230, 230, 230))
        caption += f", while an archer in {shirt} on the left draws a bow"
    return caption + "."


def bowling(im: Image.Image, rng: random.Random) -> str:
    d = ImageDraw.Draw(im)
    gradient(d, (0, 0, SIZE, SIZE), jitter((30, 30, 50), rng), jitter((60, 50, 80), rng))
    shift = rng.randint(-20, 20)
    top_w, bottom_w = rng.randint(60, 80), rng.randint(170, 200)
    cx = SIZE // 2 + shift
    lane = [(cx - top_w / 2, 30), (cx + top_w / 2, 30), (SIZE / 2 + bottom_w / 2, SIZE),
            (SIZE / 2 - bottom_w / 2, SIZE)]
    d.polygon([(lane[0][0] - 10, 30), (lane[1][0] + 10, 30), (lane[2][0] + 22, SIZE),
               (lane[3][0] - 22, SIZE)], fill=(50, 50, 55))  # gutters
    d.polygon(lane, fill=jitter((214, 170, 110), rng))
    for k in range(1, 8):  # boards
        t = k / 8
        d.line([(lane[0][0] + (lane[1][0] - lane[0][0]) * t, 30),
                (lane[3][0] + (lane[2][0] - lane[3][0]) * t, SIZE)], fill=(190, 145, 90))
    for k in range(-2, 3):  # aiming arrows
        ay = 150
        axc = SIZE / 2 + (cx - SIZE / 2) * 0.3 + k * 22
        d.polygon([(axc, ay - 8), (axc - 4, ay), (axc + 4, ay)], fill=(120, 70, 40))
    standing = 0
    knocked = rng.sample(range(10), rng.randint(0, 5))
    slots = [(row, k) for row in range(4) for k in range(row + 1)]
    for idx, (row, k) in enumerate(reversed(slots)):
        px = cx + (k - row / 2) * 14
        py = 40 + (3 - row) * 9
        if idx in knocked:
            d.ellipse([px - 9, py + 6, px + 9, py + 12], fill=(240, 240, 236),
                      outline=(150, 150, 150))
            continue
        standing += 1
        d.ellipse([px - 5, py - 10, px + 5, py + 14], fill=(248, 248, 244), outline=(150, 150, 150))
        d.ellipse([px - 3, py - 17, px + 3, py - 9], fill=(248, 248, 244), outline=(150, 150, 150))
        d.line([(px - 4, py - 6), (px + 4, py - 6)], fill=(210, 30, 30), width=2)
    ball = rng.choice(["blue", "red", "green", "purple", "orange", "pink", "black"])
    by = rng.randint(95, 185)
    br = 10 + (by - 95) * 0.12
    bx = cx + (SIZE / 2 - cx) * (by / SIZE) + rng.uniform(-0.25, 0.25) * br * 4
    d.ellipse([bx - br, by - br, bx + br, by + br], fill=COLOURS[ball], outline=(20, 20, 20))
    for hx, hy in ((-0.3, -0.35), (0.15, -0.4), (-0.05, -0.05)):
        d.ellipse([bx + hx * br - 2, by + hy * br - 2, bx + hx * br + 2, by + hy * br + 2],
                  fill=(15, 15, 15))
    pins = f"{COUNT_WORDS[standing]} standing white pins"
    if standing == 10:
        pins = "all ten white pins"
    return f"{a(ball).capitalize()} bowling ball rolls down a wooden lane towards {pins}."


def basketball(im: Image.Image, rng: random.Random) -> str:
    d = ImageDraw.Draw(im)
    floor = rng.randint(150, 175)
    wall = rng.choice([(70, 80, 120), (120, 50, 50), (50, 90, 80), (90, 90, 95)])
    gradient(d, (0, 0, SIZE, floor), jitter(wall, rng), jitter(tuple(v // 2 for v in wall), rng))
    gradient(d, (0, floor, SIZE, SIZE), jitter((210, 150, 90), rng), jitter((180, 115, 60), rng))
    d.line([(0, floor + 20), (SIZE, floor + 14)], fill=(245, 245, 245), width=2)
    right = rng.random() < 0.5
    hx = rng.randint(150, 185) if right else rng.randint(40, 75)
    board_y = rng.randint(30, 55)
    d.line([(hx, board_y + 40), (hx + (30 if right else -30), floor)], fill=(80, 80, 80), width=5)
    d.rectangle([hx - 30, board_y, hx + 30, board_y + 40], fill=(248, 248, 248),
                outline=(40, 40, 40), width=2)
    d.rectangle([hx - 10, board_y + 16, hx + 10, board_y + 32], outline=(210, 40, 30), width=2)
    rim_y = board_y + 38
    for k in range(6):  # net
        x = hx - 14 + k * 5.6
        d.line([(x, rim_y), (hx - 8 + k * 3.2, rim_y + 22)], fill=(250, 250, 250))
    d.ellipse([hx - 16, rim_y - 4, hx + 16, rim_y + 4], outline=(240, 100, 20), width=3)
    jersey = rng.choice(["red", "blue", "yellow", "green", "purple", "white", "black"])
    px = hx + (-rng.randint(35, 70) if right else rng.randint(35, 70))
    jump = rng.randint(0, 30)
    hand = person(d, px, floor + 25 - jump, rng.randint(85, 100), COLOURS[jersey], rng,
                  arms=(math.pi - 0.3, math.pi + 0.4) if right else (math.pi - 0.4, math.pi + 0.3),
                  legs_apart=0.2)
    in_air = rng.random() < 0.5
    if in_air:
        bx = (hand[0] + hx) / 2 + rng.randint(-10, 10)
        by = min(hand[1], rim_y) - rng.randint(8, 25)
    else:
        bx, by = hand[0], hand[1] - 10
    d.ellipse([bx - 10, by - 10, bx + 10, by + 10], fill=(235, 120, 30), outline=(40, 20, 10))
    d.line([(bx - 10, by), (bx + 10, by)], fill=(40, 20, 10))
    d.arc([bx - 6, by - 10, bx + 6, by + 10], 270, 90, fill=(40, 20, 10))
    action = "jumps" if jump > 12 else "reaches up"
    ball = "shoots an orange ball towards" if in_air else "holds an orange ball under"
    return (f"A basketball player in {a(jersey)} jersey {action} and {ball} the hoop on the"
            f" {'right' if right else 'left'} of an indoor court.")


def swimming(im: Image.Image, rng: random.Random) -> str:
    d = ImageDraw.Draw(im)
    gradient(d, (0, 0, SIZE, SIZE), jitter((60, 160, 220), rng), jitter((30, 110, 190), rng))
    for _ in range(rng.randint(10, 18)):  # ripples
        x, y = rng.randint(0, SIZE), rng.randint(0, SIZE)
        d.arc([x - 20, y - 4, x + 20, y + 4], 200, 340, fill=(150, 210, 245))
    lanes = rng.randint(3, 5)
    h = SIZE / lanes
    float_colours = pick_colours(rng, 2, exclude=("black", "green", "teal"))
    for k in range(1, lanes):
        y = round(k * h)
        for j, x in enumerate(range(0, SIZE, 8)):
            d.ellipse([x, y - 3, x + 7, y + 3], fill=COLOURS[float_colours[j % 2]])
    swimmers = sorted(rng.sample(range(lanes), rng.randint(1, lanes)))
    caps = []
    lead_x = -1.0
    for lane in swimmers:
        y = lane * h + h / 2 + rng.uniform(-h * 0.1, h * 0.1)
        x = rng.uniform(40, 180)
        lead_x = max(lead_x, x)
        cap = rng.choice(["red", "yellow", "white", "black", "orange", "pink", "purple"])
        caps.append(cap)
        d.ellipse([x - 34, y - 7, x + 4, y + 7], fill=(40, 120, 170))  # body under water
        d.ellipse([x - 6, y - 8, x + 10, y + 8], fill=COLOURS[cap])
        reach = rng.uniform(-1, 1)
        d.line([(x - 4, y - 5), (x + 24, y - 12 * reach - 6)], fill=rng.choice(SKIN), width=4)
        d.line([(x - 10, y + 5), (x - 32, y + 10)], fill=rng.choice(SKIN), width=4)
        for _ in range(6):  # splash behind
            sx, sy = x - rng.uniform(34, 52), y + rng.uniform(-8, 8)
            d.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], fill=(240, 248, 255))
    n = len(swimmers)
    if n == 1:
        who = f"A swimmer in {a(caps[0])} cap swims"
    else:
        same = len(set(caps)) == 1
        colours = caps[0] if same else ", ".join(caps[:-1]) + " and " + caps[-1]
        who = f"{COUNT_WORDS[n].capitalize()} swimmers in {colours} caps swim"
    return (f"{who} freestyle across a blue pool with {COUNT_WORDS[lanes]} lanes divided by"
            f" {float_colours[0]} and {float_colours[1]} lane ropes.")


# label (as in 100SIC) -> (its class id in 100SIC's sports.csv, drawing function)
SPORTS: dict[str, tuple[int, Callable[[Image.Image, random.Random], str]]] = {
    "air hockey": (0, air_hockey),
    "archery": (2, archery),
    "basketball": (8, basketball),
    "bowling": (14, bowling),
    "swimming": (85, swimming),
    "tug of war": (90, tug_of_war),
}


def make(out: Path) -> None:
    rows, captions = [], []
    for label, (class_id, draw) in SPORTS.items():
        for split, count in SPLITS.items():
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, count + 1):
                rng = random.Random(f"{label}|{split}|{i}")
                im = Image.new("RGB", (SIZE, SIZE))
                caption = draw(im, rng)
                rel = f"{split}/{label}/{i:03d}.jpg"
                im.save(out / rel, "JPEG", quality=JPEG_QUALITY, optimize=True)
                rows.append((class_id, rel, label, split))
                if split == "train":
                    captions.append({"image": rel, "caption": caption})
    split_order = list(SPLITS)
    rows.sort(key=lambda r: (split_order.index(r[3]), r[0], r[1]))
    with (out / "sports.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["class id", "filepaths", "labels", "data set"])
        writer.writerows(rows)
    with (out / "captions.jsonl").open("w", encoding="utf-8") as fh:
        for c in captions:
            fh.write(json.dumps(c) + "\n")
    print(f"{out}: {len(rows)} images, {len(captions)} captions")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "sample_data"
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
