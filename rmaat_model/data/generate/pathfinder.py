"""Pathfinder (Linsley et al. 2018; Kim et al. 2020) as in LRA: the generator of the official
files. NumPy and PIL only: ``rmaat generate pathfinder`` imports no torch.

An image holds two *target contours* of ``contour_length`` paddles (short line segments),
``n_distractors`` shorter distractor contours and optionally single paddles, and two round
markers. Label 1: the markers sit on both ends of the same target contour; label 0: one
sits on an end of each target contour. The model must trace the contour to tell.

Geometry (units: output pixels). A contour starts at a uniform point with a uniform
orientation; each next paddle starts on a circle of radius ``paddle_gap`` around the end of
the last one, turned by an angle drawn from 13 candidates in [-90, 90] degrees weighted
by ``exp(-(turn / sigma)^2 / 2)`` with ``sigma = 30 deg / continuity`` (so a larger
``continuity`` gives smoother contours); candidates are tried in that weighted random order
until one fits. A paddle fits when it lies inside the image (``padding`` from the border)
and keeps a centre-line distance of at least ``margin + thickness`` from every other
contour and from its own non-adjacent paddles, and ``marker_radius + thickness / 2 +
margin`` from the marker centres. Since ``paddle_gap < margin + thickness`` (checked),
contours are exactly the connected components of "paddles closer than the gap" -- the
property the tests check. The two markers are at least ``seed_distance`` apart.

Rendering: each paddle is a thick segment drawn with a one-pixel anti-aliasing ramp on a
canvas ``antialias`` times finer, at intensity ``snake_contrast * paddle_contrast``
(markers at 1); the canvas is averaged down to the output size, clipped to [0, 1] and
stored as 8-bit grey PNG. Settings follow the LRA release notes for 32, 64 and 128 px (see
SETTINGS); the mapping of ``continuity`` to turning angles and the paddle gap are this
re-implementation's reading, as the original generator could not be consulted.

Layout (official): ``pathfinder{R}/curv_contour_length_14/imgs/<batch>/sample_<i>.png`` and
``metadata/<batch>.npy`` -- despite the suffix a *text* file, one line per image, space
separated: ``imgs/<batch> sample_<i>.png <i> <label> <continuity> <contour_length>
<distractor_length> <paddle_length> <paddle_thickness> <margin> <n_contrasts>``. The loader
uses columns 0, 1 (path) and 3 (label). A batch's metadata is written after its images, so
an interrupted generation resumes at the first batch without metadata. Images are seeded
one by one (``SeedSequence([seed, index])``), so the output depends only on the seed.
The loader (a torch Dataset, and the train/val/test split) is rmaat_model.data.pathfinder.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astro_rmaat.config import require_seed
from astro_rmaat.errors import ConfigError
from astro_rmaat.workers import check_local_workers
from rmaat_model.data.generate import worker_pool

SUBDIR = "curv_contour_length_14"
BATCH_SIZE = 1000          # images per imgs/<batch>/ folder and metadata file
N_TURNS = 13               # candidate turning angles in [-90, 90] degrees


@dataclass(frozen=True)
class PathfinderSettings:
    resolution: int = 32              # output image side, px
    contour_length: int = 14          # paddles per target contour
    paddle_length: float = 2.0        # px
    paddle_thickness: float = 0.5     # px
    paddle_gap: float = 0.75          # px between a paddle's end and the next one's start
    margins: tuple[float, ...] = (1.0,)  # px clearance between contours; one drawn per image
    padding: float = 1.0              # px kept free at the image border
    marker_radius: float = 1.5        # px
    seed_distance: float = 7.0        # px, least distance between the two markers
    continuity: float = 1.0           # smoothness: turn sigma = 30 deg / continuity
    distractor_length: int = 4        # paddles per distractor contour (contour_length // 3)
    n_distractors: int = 5            # distractor contours (20 // distractor_length at 32 px)
    n_single_paddles: int = 0         # single-paddle distractors (LRA wrapper default: off)
    snake_contrast: float = 2.0       # intensity multiplier of contours (clipped after downsampling)
    paddle_contrast: float = 0.75     # intensity multiplier of every paddle
    antialias: int = 2                # drawing canvas is this many times finer

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ConfigError(f"resolution = {self.resolution!r}: expected >= 8 px")
        for name in ("paddle_length", "paddle_thickness", "paddle_gap", "marker_radius",
                     "continuity", "snake_contrast", "paddle_contrast"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: expected a positive number")
        if self.contour_length < 2 or self.distractor_length < 1 or self.antialias < 1:
            raise ConfigError("contour_length >= 2, distractor_length >= 1 and antialias >= 1 "
                              f"expected, got {self.contour_length}, {self.distractor_length}, "
                              f"{self.antialias}")
        if not self.margins or min(self.margins) < 0:
            raise ConfigError(f"margins = {self.margins!r}: expected non-negative px values")
        if self.paddle_gap >= min(self.margins) + self.paddle_thickness:
            raise ConfigError(f"paddle_gap = {self.paddle_gap}: must be below margin + thickness "
                              f"= {min(self.margins) + self.paddle_thickness} px so contours stay "
                              "separable")


#: LRA settings per resolution (pathfinder32 / 64 / 128 = Path-X), "hard" (contour length 14)
SETTINGS: dict[int, PathfinderSettings] = {
    32: PathfinderSettings(),
    64: PathfinderSettings(resolution=64, paddle_length=5.0, paddle_thickness=1.0,
                           paddle_gap=1.5, margins=(1.0,), padding=1.0, marker_radius=2.5,
                           seed_distance=12.0, continuity=1.8, distractor_length=4,
                           n_distractors=4, snake_contrast=0.8, paddle_contrast=1.0),
    128: PathfinderSettings(resolution=128, paddle_length=5.0, paddle_thickness=1.5,
                            paddle_gap=2.0, margins=(2.0, 3.0), padding=1.0, marker_radius=3.0,
                            seed_distance=20.0, continuity=1.8, distractor_length=4,
                            n_distractors=7, snake_contrast=0.9, paddle_contrast=1.0),
}


# --------------------------------------------------------------------------- geometry
def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``p`` (..., 2) to segments ``a``-``b`` (..., 2), broadcast."""
    return _pt_seg(p[..., 0], p[..., 1], a[..., 0], a[..., 1], b[..., 0], b[..., 1])


def _pt_seg(px, py, ax, ay, bx, by):
    abx, aby = bx - ax, by - ay
    t = ((px - ax) * abx + (py - ay) * aby) / np.maximum(abx * abx + aby * aby, 1e-12)
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    dx, dy = px - ax - t * abx, py - ay - t * aby
    return np.sqrt(dx * dx + dy * dy)


def segment_distance(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least distance between segments ``p``-``q`` and ``a``-``b`` (..., 2), broadcast."""
    px, py, qx, qy = p[..., 0], p[..., 1], q[..., 0], q[..., 1]
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    d = np.minimum(np.minimum(_pt_seg(px, py, ax, ay, bx, by), _pt_seg(qx, qy, ax, ay, bx, by)),
                   np.minimum(_pt_seg(ax, ay, px, py, qx, qy), _pt_seg(bx, by, px, py, qx, qy)))
    # proper crossing: each segment's ends on strictly opposite sides of the other's line
    c1 = (qx - px) * (ay - py) - (qy - py) * (ax - px)
    c2 = (qx - px) * (by - py) - (qy - py) * (bx - px)
    c3 = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    c4 = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
    return np.where((c1 * c2 < 0) & (c3 * c4 < 0), 0.0, d)


@dataclass
class Scene:
    """The geometry of one image, kept for tests and for rendering."""
    settings: PathfinderSettings
    margin: float                                   # px, the margin drawn for this image
    label: int                                      # 1: markers on one contour, 0: on two
    contours: list[np.ndarray] = field(default_factory=list)  # each (n, 2, 2): paddle ends
    kinds: list[str] = field(default_factory=list)  # "target", "distractor" or "paddle"
    markers: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))  # centres (x, y)
    marker_contours: tuple[int, int] = (0, 0)       # index of the contour each marker ends


class _Obstacles:
    """Placed segments (markers are zero-length) with their required clearance."""

    def __init__(self, capacity: int = 64) -> None:
        self.seg = np.zeros((capacity, 4))          # ax, ay, bx, by
        self.clear = np.zeros(capacity)
        self.owner = np.zeros(capacity, dtype=int)
        self.index = np.zeros(capacity, dtype=int)
        self.n = 0

    def add(self, a, b, clear: float, owner: int, index: int) -> None:
        if self.n == len(self.clear):
            grow = len(self.clear)
            self.seg = np.concatenate([self.seg, np.zeros((grow, 4))])
            self.clear = np.concatenate([self.clear, np.zeros(grow)])
            self.owner = np.concatenate([self.owner, np.zeros(grow, dtype=int)])
            self.index = np.concatenate([self.index, np.zeros(grow, dtype=int)])
        self.seg[self.n] = (a[0], a[1], b[0], b[1])
        self.clear[self.n], self.owner[self.n], self.index[self.n] = clear, owner, index
        self.n += 1

    def fits(self, p: np.ndarray, q: np.ndarray, owner: int, index: int) -> np.ndarray:
        """Which candidate segments ``p``-``q`` (k, 2) keep their clearance (k,)."""
        n = self.n
        if n == 0:
            return np.ones(len(p), dtype=bool)
        seg, clear = self.seg[:n], self.clear[:n]
        # only obstacles that can come within their clearance of the candidates' bounding circle
        pts = np.concatenate([p, q])
        centre = pts.mean(axis=0)
        reach = np.sqrt(((pts - centre) ** 2).sum(axis=1).max())
        mid = (seg[:, 0:2] + seg[:, 2:4]) / 2
        half = np.sqrt(((seg[:, 2:4] - seg[:, 0:2]) ** 2).sum(axis=1)) / 2
        near = np.sqrt(((mid - centre) ** 2).sum(axis=1)) - half - reach < clear
        near &= ~((self.owner[:n] == owner) & (self.index[:n] >= index - 1))  # grows from it
        if not near.any():
            return np.ones(len(p), dtype=bool)
        seg, clear = seg[near], clear[near]
        d = segment_distance(p[:, None], q[:, None], seg[None, :, 0:2], seg[None, :, 2:4])  # (k, m)
        return (d >= clear[None]).all(axis=1)


def _inside(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.all((p >= lo) & (p <= hi), axis=-1)


def _grow_contour(rng: np.random.Generator, s: PathfinderSettings, obstacles: _Obstacles,
                  owner: int, n: int, margin: float, tries: int = 20) -> np.ndarray | None:
    """Place a contour of ``n`` paddles (added to ``obstacles``), or None after ``tries`` starts."""
    lo = s.padding + s.paddle_thickness / 2
    hi = s.resolution - lo
    clear = margin + s.paddle_thickness
    sigma = math.radians(30.0) / s.continuity
    turns = np.linspace(-math.pi / 2, math.pi / 2, N_TURNS)
    log_w = -0.5 * (turns / sigma) ** 2
    base = obstacles.n
    for _ in range(tries):
        obstacles.n = base  # drop the paddles of a failed attempt
        start = rng.uniform(lo, hi, size=2)
        theta = rng.uniform(0, 2 * math.pi)
        end = start + s.paddle_length * np.array([math.cos(theta), math.sin(theta)])
        if not (_inside(end, lo, hi) and obstacles.fits(start[None], end[None], owner, 0)[0]):
            continue
        paddles = [np.stack([start, end])]
        obstacles.add(start, end, clear, owner, 0)
        for i in range(1, n):
            # weighted order without replacement (Gumbel top-k on the turn weights)
            order = np.argsort(-(log_w + rng.gumbel(size=N_TURNS)))
            angles = theta + turns[order]
            dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)      # (k, 2)
            ps = paddles[-1][1][None] + s.paddle_gap * dirs
            qs = ps + s.paddle_length * dirs
            ok = _inside(ps, lo, hi) & _inside(qs, lo, hi) & obstacles.fits(ps, qs, owner, i)
            if not ok.any():
                break
            k = int(np.argmax(ok))  # first fitting candidate in the weighted random order
            theta = float(angles[k])
            paddles.append(np.stack([ps[k], qs[k]]))
            obstacles.add(ps[k], qs[k], clear, owner, i)
        if len(paddles) == n:
            return np.stack(paddles)
    obstacles.n = base
    return None


def make_scene(rng: np.random.Generator, settings: PathfinderSettings,
               label: int | None = None, max_attempts: int = 200) -> Scene:
    """Draw the geometry of one image (label drawn 50/50 unless given)."""
    s = settings
    if label is None:
        label = int(rng.integers(2))
    for _ in range(max_attempts):
        margin = float(rng.choice(np.asarray(s.margins)))
        scene = Scene(settings=s, margin=margin, label=label)
        obstacles = _Obstacles()
        ok = True
        for owner in range(2):  # the two target contours
            contour = _grow_contour(rng, s, obstacles, owner, s.contour_length, margin)
            if contour is None:
                ok = False
                break
            scene.contours.append(contour)
            scene.kinds.append("target")
        if not ok:
            continue
        ends = [(c[0, 0], c[-1, 1]) for c in scene.contours]  # (start, end) per target
        if label == 1:
            which = int(rng.integers(2))
            options = [((ends[which][0], which), (ends[which][1], which))]
        else:
            options = [((ends[0][i], 0), (ends[1][j], 1)) for i in range(2) for j in range(2)]
            options = [options[k] for k in rng.permutation(len(options))]
        chosen = None
        for (m0, c0), (m1, c1) in options:
            if np.linalg.norm(m0 - m1) < s.seed_distance:
                continue
            clear = s.marker_radius + s.paddle_thickness / 2 + margin
            # a marker touches no target contour but its own
            if all(point_segment_distance(m, scene.contours[f][:, 0], scene.contours[f][:, 1]).min()
                   >= clear for m, own in ((m0, c0), (m1, c1)) for f in range(2) if f != own):
                chosen = (m0, c0, m1, c1)
                break
        if chosen is None:
            continue
        m0, c0, m1, c1 = chosen
        scene.markers = np.stack([m0, m1])
        scene.marker_contours = (c0, c1)
        marker_clear = s.marker_radius + s.paddle_thickness / 2 + margin
        for m in scene.markers:
            obstacles.add(m, m, marker_clear, -1, 0)
        owner = 2
        for length, count, kind in ((s.distractor_length, s.n_distractors, "distractor"),
                                    (1, s.n_single_paddles, "paddle")):
            for _ in range(count):
                contour = _grow_contour(rng, s, obstacles, owner, length, margin)
                if contour is None:
                    continue  # a crowded image keeps fewer distractors
                scene.contours.append(contour)
                scene.kinds.append(kind)
                owner += 1
        return scene
    raise RuntimeError(f"could not place the target contours in {max_attempts} attempts; "
                       "the settings leave too little room")


def render(scene: Scene) -> np.ndarray:
    """The 8-bit grey image (R, R) of a scene."""
    s = scene.settings
    aa, size = s.antialias, s.resolution * s.antialias
    canvas = np.zeros((size, size))  # (y, x) on the fine grid
    centres = (np.arange(size) + 0.5) / aa  # output-px coordinates of fine pixel centres
    half = s.paddle_thickness / 2
    intensity = s.snake_contrast * s.paddle_contrast

    def stamp(a: np.ndarray, b: np.ndarray, radius: float, value: float) -> None:
        lo = np.floor((np.minimum(a, b) - radius - 1) * aa).astype(int).clip(0, size)
        hi = np.ceil((np.maximum(a, b) + radius + 1) * aa).astype(int).clip(0, size)
        xs, ys = centres[lo[0]:hi[0]], centres[lo[1]:hi[1]]
        pts = np.stack(np.meshgrid(xs, ys), axis=-1)  # (h, w, 2) as (x, y)
        d = point_segment_distance(pts, a, b)
        cover = np.clip((radius - d) * aa + 0.5, 0.0, 1.0)
        view = canvas[lo[1]:hi[1], lo[0]:hi[0]]
        np.maximum(view, value * cover, out=view)

    for contour in scene.contours:
        for a, b in contour:
            stamp(a, b, half, intensity)
    for m in scene.markers:
        stamp(m, m, s.marker_radius, 1.0)
    small = canvas.reshape(s.resolution, aa, s.resolution, aa).mean(axis=(1, 3))
    return np.rint(np.clip(small, 0.0, 1.0) * 255).astype(np.uint8)


def connected_components(scene: Scene, tol: float = 1e-6) -> np.ndarray:
    """Component id of every paddle, joining paddles no farther apart than the gap."""
    segs = np.concatenate(scene.contours)  # (P, 2, 2)
    d = segment_distance(segs[:, None, 0], segs[:, None, 1], segs[None, :, 0], segs[None, :, 1])
    adj = d <= scene.settings.paddle_gap + tol
    comp = -np.ones(len(segs), dtype=int)
    for start in range(len(segs)):
        if comp[start] >= 0:
            continue
        stack, comp[start] = [start], start
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(adj[i] & (comp < 0)):
                comp[j] = start
                stack.append(j)
    return comp


def markers_connected(scene: Scene, tol: float = 1e-6) -> bool:
    """Whether one chain of touching paddles joins the two markers (the ground truth)."""
    segs = np.concatenate(scene.contours)
    comp = connected_components(scene, tol)
    touching = [set(comp[point_segment_distance(m, segs[:, 0], segs[:, 1]) <= tol])
                for m in scene.markers]
    return bool(touching[0] & touching[1])


def image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def generate_image(settings: PathfinderSettings, seed: int, index: int) -> tuple[np.ndarray, Scene]:
    scene = make_scene(image_rng(seed, index), settings)
    return render(scene), scene


# --------------------------------------------------------------------------- files
def dataset_dir(out_dir: str | Path, resolution: int) -> Path:
    return Path(out_dir) / f"pathfinder{resolution}" / SUBDIR


def _write_batch(args: tuple[str, PathfinderSettings, int, int, int, int]) -> int:
    """Write images ``[first, first + count)`` of batch ``batch``; metadata last."""
    from PIL import Image

    from astro_rmaat.runs import atomic_path, atomic_write_text
    root, s, seed, batch, first, count = args
    root = Path(root)
    img_dir = root / "imgs" / str(batch)
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image, scene = generate_image(s, seed, first + i)
        with atomic_path(img_dir / f"sample_{i}.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        rows.append(f"imgs/{batch} sample_{i}.png {i} {scene.label} {s.continuity} "
                    f"{s.contour_length} {s.distractor_length} {s.paddle_length} "
                    f"{s.paddle_thickness} {scene.margin:g} 1")
    atomic_write_text(root / "metadata" / f"{batch}.npy", "\n".join(rows) + "\n")
    return count


#: bytes of the smallest PNG file: signature (8), IHDR (25), one IDAT chunk (12 + data), IEND (12)
PNG_MIN_BYTES = 57


def check_room(run_dir: str | Path, n: int) -> None:
    """Refuse ``n`` images whose files cannot fit on ``run_dir``'s file system, before anything
    is written. Lower bounds: every image is a PNG file of at least ``PNG_MIN_BYTES``, and each
    file and batch folder takes a file entry (inode), with a metadata file per batch."""
    from astro_rmaat import resources

    room = resources.free_space(run_dir)
    if room is None:
        return
    where, free, inodes = room
    files = n + 2 * math.ceil(n / BATCH_SIZE)
    if n * PNG_MIN_BYTES > free:
        raise ConfigError(f"n = {n}: {n:,} PNG images take at least {n * PNG_MIN_BYTES / 1e9:,.1f} GB, more than "
                          f"the {free / 1e9:,.1f} GB free at {str(where)!r}; expected fewer images")
    if inodes is not None and files > inodes:
        raise ConfigError(f"n = {n}: {n:,} images and their batch folders need {files:,} file entries, more than "
                          f"the {inodes:,} free at {str(where)!r}; expected fewer images")


def generate_files(out_dir: str | Path, *, resolution: int = 32, n: int = 200_000,
                   seed: int = 0, workers: int = 1, progress: bool = False,
                   settings: PathfinderSettings | None = None) -> Path:
    """Generate ``n`` images into ``out_dir/pathfinder{R}/curv_contour_length_14/``.

    ``out_dir/pathfinder{R}`` is a run directory: finished generations are never
    overwritten; an interrupted one with the same settings resumes at the first batch
    without metadata.
    """
    from astro_rmaat import runs
    if settings is None:
        if resolution not in SETTINGS:
            raise ConfigError(f"resolution = {resolution!r}: expected one of "
                              f"{', '.join(map(str, SETTINGS))} px")
        settings = SETTINGS[resolution]
    require_seed("seed", seed)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"n = {n!r}: expected a positive number of images")
    if workers < 1:
        raise ConfigError(f"workers = {workers!r}: expected a positive number of processes")
    check_local_workers("workers", workers)
    run_dir = Path(out_dir) / f"pathfinder{settings.resolution}"
    check_room(run_dir, n)
    config = {"task": "pathfinder", "n": n, "seed": seed, **dataclasses.asdict(settings)}
    runs.prepare_run_dir(run_dir, config)
    root = dataset_dir(out_dir, settings.resolution)
    jobs = [(str(root), settings, seed, b, b * BATCH_SIZE, min(BATCH_SIZE, n - b * BATCH_SIZE))
            for b in range(math.ceil(n / BATCH_SIZE))
            if not (root / "metadata" / f"{b}.npy").is_file()]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, initial=n - sum(j[-1] for j in jobs), desc=f"pathfinder{settings.resolution}",
                   unit="img")
    with runs.Stopwatch() as sw:
        if workers > 1 and len(jobs) > 1:
            with worker_pool(workers) as pool:
                for done in pool.imap_unordered(_write_batch, jobs):
                    if bar is not None:
                        bar.update(done)
        else:
            for job in jobs:
                done = _write_batch(job)
                if bar is not None:
                    bar.update(done)
    if bar is not None:
        bar.close()
    generated = sum(j[-1] for j in jobs)
    runs.finish_run(run_dir, runs.make_meta(stage="generate-pathfinder", seed=seed,
                                            wall_time_s=sw.elapsed, workers=workers,
                                            images_per_s=generated / max(sw.elapsed, 1e-9)))
    return root

