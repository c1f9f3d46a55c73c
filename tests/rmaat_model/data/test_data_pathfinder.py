"""Pathfinder: on the generated geometry, positives join the two markers by one contour and
negatives do not; labels are balanced; the official layout round-trips through the loader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from astro_rmaat.errors import ConfigError, DataError, RunExistsError
from rmaat_model.data import base, pathfinder as pf
from rmaat_model.data.generate import pathfinder as pf_gen


@pytest.fixture(scope="module")
def scenes32():
    return [pf_gen.make_scene(pf_gen.image_rng(7, i), pf_gen.SETTINGS[32]) for i in range(160)]


def _check_scene(scene):
    s = scene.settings
    segs = np.concatenate(scene.contours)
    owner = np.concatenate([[k] * len(c) for k, c in enumerate(scene.contours)])
    comp = pf_gen.connected_components(scene)
    # contours are exactly the chains of touching paddles: nothing touches by accident
    for k in range(len(scene.contours)):
        assert len(set(comp[owner == k])) == 1
    assert len(set(comp)) == len(scene.contours)
    # the ground truth of the image equals its label
    assert pf_gen.markers_connected(scene) == bool(scene.label)
    c0, c1 = scene.marker_contours
    assert (c0 == c1) == bool(scene.label)
    assert scene.kinds[c0] == scene.kinds[c1] == "target"
    for m, c in zip(scene.markers, scene.marker_contours):   # markers sit on contour ends
        ends = np.stack([scene.contours[c][0, 0], scene.contours[c][-1, 1]])
        assert np.min(np.linalg.norm(ends - m, axis=1)) < 1e-9
    assert np.linalg.norm(scene.markers[0] - scene.markers[1]) >= s.seed_distance
    clear = s.marker_radius + s.paddle_thickness / 2 + scene.margin
    for m, own in zip(scene.markers, scene.marker_contours):  # no marker touches another contour
        for k, c in enumerate(scene.contours):
            if k != own:
                assert pf_gen.point_segment_distance(m, c[:, 0], c[:, 1]).min() >= clear - 1e-9
    targets = [c for c, k in zip(scene.contours, scene.kinds) if k == "target"]
    assert len(targets) == 2 and all(len(c) == s.contour_length for c in targets)
    lengths = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
    assert np.allclose(lengths, s.paddle_length)
    assert segs.min() >= s.padding and segs.max() <= s.resolution - s.padding
    # consecutive paddles: next start on the circle of radius paddle_gap around the last end
    for c in scene.contours:
        gaps = np.linalg.norm(c[1:, 0] - c[:-1, 1], axis=1)
        assert np.allclose(gaps, s.paddle_gap)


def test_positives_join_the_markers_and_negatives_do_not(scenes32):
    for scene in scenes32:
        _check_scene(scene)
    for r in (64, 128):
        for i in range(6):
            _check_scene(pf_gen.make_scene(pf_gen.image_rng(3, i), pf_gen.SETTINGS[r]))


def test_labels_are_balanced(scenes32):
    labels = np.array([s.label for s in scenes32])
    assert abs(labels.mean() - 0.5) < 0.15   # 160 fair draws: 3.8 sigma
    assert sum(len(s.contours) > 2 for s in scenes32) > 0.9 * len(scenes32)  # distractors drawn


def test_rendering_shows_markers_and_paddles(scenes32):
    for scene in scenes32[:10]:
        img = pf_gen.render(scene)
        assert img.shape == (32, 32) and img.dtype == np.uint8
        for m in scene.markers:
            x, y = np.floor(m).astype(int).clip(0, 31)
            assert img[y, x] >= 200                       # marker centres are bright
        for contour in scene.contours:
            mid = contour.mean(axis=1)                    # paddle midpoints
            xs, ys = np.floor(mid).astype(int).T.clip(0, 31)
            assert (img[ys, xs] > 0).all()
        # pixels far from every paddle and marker are black
        yy, xx = np.mgrid[0:32, 0:32] + 0.5
        pts = np.stack([xx, yy], axis=-1).reshape(-1, 1, 2)
        segs = np.concatenate(scene.contours)
        d = pf_gen.point_segment_distance(pts, segs[None, :, 0], segs[None, :, 1]).min(axis=1)
        dm = np.linalg.norm(pts[:, 0, None] - scene.markers[None], axis=-1).min(axis=1)
        far = (d > 2.0) & (dm > scene.settings.marker_radius + 1.5)
        assert (img.reshape(-1)[far] == 0).all()


def test_generated_layout_loads_and_is_worker_independent(tmp_path, monkeypatch):
    monkeypatch.setattr(pf_gen, "BATCH_SIZE", 5)
    root1 = pf_gen.generate_files(tmp_path / "a", n=20, seed=4, workers=1)
    root2 = pf_gen.generate_files(tmp_path / "b", n=20, seed=4, workers=2)
    assert root1 == tmp_path / "a" / "pathfinder32" / "curv_contour_length_14"
    files = sorted(p.relative_to(root1) for p in root1.rglob("*") if p.is_file())
    assert len(files) == 20 + 4
    for rel in files:
        assert (root1 / rel).read_bytes() == (root2 / rel).read_bytes()
    meta = (root1 / "metadata" / "1.npy").read_text().splitlines()
    assert len(meta) == 5 and meta[2].split(" ")[:3] == ["imgs/1", "sample_2.png", "2"]
    sizes = {}
    for split in base.SPLITS:
        spec, ds = base.load_split("pathfinder", tmp_path / "a", split)
        assert spec == base.TaskSpec("pathfinder", 257, 2, 1024, 0, False)
        sizes[split] = len(ds)
    assert sizes == {"train": 16, "val": 2, "test": 2}
    _, test = base.load_split("pathfinder", tmp_path / "a", "test", max_len=1024)
    for k in range(2):   # the last two images: batch 3, samples 3 and 4 (index 18, 19)
        image, scene = pf_gen.generate_image(pf_gen.SETTINGS[32], 4, 18 + k)
        item = test[k]
        assert item["label"] == scene.label
        assert item["tokens"].tolist() == (image.reshape(-1).astype(int) + 1).tolist()
    with pytest.raises(RunExistsError):
        pf_gen.generate_files(tmp_path / "a", n=20, seed=4)


def test_official_layout_written_elsewhere_loads(tmp_path):
    root = tmp_path / "pathfinder32" / "curv_contour_length_14"
    for batch in (0, 1):
        (root / "imgs" / str(batch)).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((32, 32), 10 * i, dtype=np.uint8)).save(
                root / "imgs" / str(batch) / f"sample_{i}.png")
        lines = [f"imgs/{batch} sample_{i}.png {i} {(i + batch) % 2} 1.0 14 4 2 0.5 1 1"
                 for i in range(5)]
        (root / "metadata").mkdir(exist_ok=True)
        (root / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")
    _, train = base.load_split("pathfinder", tmp_path, "train")
    assert len(train) == 8 and train[6]["label"] == 0 and train[6]["tokens"].unique().tolist() == [11]
    _, via_root = pf.load_split(root, "val")                 # the dataset folder itself
    assert len(via_root) == 1


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(DataError, match="rmaat generate pathfinder"):
        base.load_split("pathfinder", tmp_path, "train")
    with pytest.raises(DataError, match="resolution 128"):
        base.load_split("pathfinder", tmp_path, "train", max_len=128 * 128)
    with pytest.raises(ConfigError, match="1024"):
        base.load_split("pathfinder", tmp_path, "train", max_len=1000)
    with pytest.raises(ConfigError, match="resolution"):
        pf_gen.generate_files(tmp_path, resolution=48, n=2)
    with pytest.raises(ConfigError, match="paddle_gap"):
        pf_gen.PathfinderSettings(paddle_gap=2.0)
    root = tmp_path / "pathfinder32" / "curv_contour_length_14"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0 yes\n")
    with pytest.raises(DataError, match="line 1"):
        pf.load_split(tmp_path, "train")
    (root / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0 1\n" * 10)
    _, ds = pf.load_split(tmp_path, "train")
    with pytest.raises(DataError, match="sample_0.png"):
        ds[0]


def test_interrupted_generation_resumes_to_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(pf_gen, "BATCH_SIZE", 3)
    root = pf_gen.generate_files(tmp_path, n=6, seed=9)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    # an interruption during batch 1: no meta.json, no metadata/1.npy, one image missing
    (tmp_path / "pathfinder32" / "meta.json").unlink()
    (root / "metadata" / "1.npy").unlink()
    (root / "imgs" / "1" / "sample_2.png").unlink()
    batch0 = (root / "imgs" / "0" / "sample_0.png").stat().st_mtime_ns
    pf_gen.generate_files(tmp_path, n=6, seed=9)
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    assert (root / "imgs" / "0" / "sample_0.png").stat().st_mtime_ns == batch0  # not redone
    with pytest.raises(RunExistsError):
        pf_gen.generate_files(tmp_path, n=6, seed=10)              # finished: never overwritten


def test_room_check_is_a_lower_bound_of_the_files_and_refuses_before_writing(tmp_path, monkeypatch):
    """check_room's bytes (PNG_MIN_BYTES an image) and file entries (an image each, a folder and
    a metadata file a batch) never exceed what generate_files makes; one short refuses before the
    run folder exists, exactly enough generates."""
    from astro_rmaat import resources

    n = 12
    files, least = n + 2, n * pf_gen.PNG_MIN_BYTES
    monkeypatch.setattr(resources, "free_space", lambda path: (tmp_path, least - 1, None))
    with pytest.raises(ConfigError, match=r"n = 12: 12 PNG images take at least"):
        pf_gen.generate_files(tmp_path / "a", n=n, seed=1)
    monkeypatch.setattr(resources, "free_space", lambda path: (tmp_path, least, files - 1))
    with pytest.raises(ConfigError, match=r"need 14 file entries, more than the 13 free"):
        pf_gen.generate_files(tmp_path / "a", n=n, seed=1)
    assert not (tmp_path / "a").exists()
    monkeypatch.setattr(resources, "free_space", lambda path: (tmp_path, least, files))
    pf_gen.generate_files(tmp_path / "a", n=n, seed=1)
    made = [p for p in (tmp_path / "a").rglob("*") if p.name not in ("config.json", "meta.json", ".lock")]
    pngs = [p for p in made if p.suffix == ".png"]
    assert len(pngs) == n and sum(p.stat().st_size for p in pngs) >= least
    assert len(made) >= files
