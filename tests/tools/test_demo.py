"""tools/demo.py: images, folders and globs; a real video file in and out; the CLI as a subprocess; bad
inputs (truncated, not images, 16-bit) read through the checked reader.

The webcam path (``--webcam``: ``cv2.VideoCapture(0)``) runs the same frame loop as
``--video-input`` but cannot be tested here: there is no camera.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from detectron2.data.detection_utils import read_image
from PIL import Image

from tests.helpers import REPO_ROOT, tiny_cfg, write_image

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import demo  # noqa: E402

# An untrained model: decode exactly two objects by seeded hot sampling (greedy decoding of a
# fresh model repeats one coordinate: empty boxes, dropped), so there are boxes to draw.
DETECTING = [
    "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 2, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False,
    "MODEL.PIX2SEQ.DECODE.STRATEGY", "sample", "MODEL.PIX2SEQ.DECODE.TOP_P", 1.0,
    "MODEL.PIX2SEQ.DECODE.TEMPERATURE", 10.0, "MODEL.PIX2SEQ.DECODE.SEED", 0,
]  # fmt: skip


def tiny_config_file(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_cfg(*DETECTING).dump())
    return str(path)


def moving_square_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        frame = np.full((h, w, 3), 40, np.uint8)
        frame[10:30, 5 + 5 * i : 25 + 5 * i] = (0, 200, 255)
        frames.append(frame)
    return frames


def write_video(path: str, frames: list[np.ndarray], fourcc: str, fps: float = 5.0) -> str:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_video(path: str) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(path)
    frames = list(demo.video_frames(capture))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def run_demo(tmp_path, *args: str) -> list[str]:
    return demo.main(demo.get_parser().parse_args(["--config-file", tiny_config_file(tmp_path), *args]))


def test_images_from_a_folder_and_a_glob_are_drawn_enlarged(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        write_image(str(images / name), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    written = run_demo(tmp_path, "--input", str(images), "--output", str(out), "--min-output-size", "128",
                       "--confidence-threshold", "0")  # fmt: skip
    assert sorted(os.path.basename(p) for p in written) == ["a.png", "b.jpg"]
    for path in written:
        picture = cv2.imread(path)
        assert picture.shape == (96, 128, 3)
        assert not np.array_equal(picture, cv2.resize(cv2.imread(str(images / os.path.basename(path))), (128, 96)))

    single = tmp_path / "single" / "drawn.png"
    written = run_demo(tmp_path, "--input", str(images / "a*.png"), "--output", str(single), "--min-output-size", "0")
    assert written == [str(single)] and cv2.imread(str(single)).shape == (48, 64, 3)


def test_confidence_threshold_sets_the_model_threshold_after_opts(tmp_path):
    args = demo.get_parser().parse_args(
        ["--config-file", tiny_config_file(tmp_path), "--input", "x.png", "--output", "o", "--confidence-threshold",
         "0.3", "--opts", "MODEL.PIX2SEQ.SCORE_THRESH_TEST", "0.9"]
    )  # fmt: skip
    assert demo.setup_cfg(args).MODEL.PIX2SEQ.SCORE_THRESH_TEST == pytest.approx(0.3)
    with pytest.raises(SystemExit):  # one source at a time
        demo.get_parser().parse_args(["--config-file", "c", "--input", "x", "--webcam", "--output", "o"])


def test_run_on_video_yields_one_drawn_frame_per_frame(tmp_path):
    video = write_video(str(tmp_path / "clip.avi"), moving_square_frames(4), "MJPG")
    cfg = tiny_cfg(*DETECTING, "MODEL.PIX2SEQ.SCORE_THRESH_TEST", 0.0)
    predictor = demo.Pix2SeqPredictor(cfg)
    capture = cv2.VideoCapture(video)
    drawn = list(demo.run_on_video(predictor, capture, predictor.metadata, min_output_size=128))
    capture.release()
    originals, _ = read_video(video)
    assert len(drawn) == 4
    assert all(frame.shape == (96, 128, 3) and frame.dtype == np.uint8 for frame in drawn)
    plain = [cv2.resize(f, (128, 96), interpolation=cv2.INTER_NEAREST) for f in originals]
    assert any(not np.array_equal(d, p) for d, p in zip(drawn, plain))  # boxes and labels were drawn

    capture = cv2.VideoCapture(video)
    assert len(list(demo.run_on_video(predictor, capture, predictor.metadata, max_frames=2))) == 2
    capture.release()


@pytest.mark.parametrize("source_codec,output_name", [("mp4v", "drawn.avi"), ("MJPG", "drawn.mp4"), ("mp4v", "")])
def test_video_in_video_out(tmp_path, source_codec, output_name):
    ext = ".mp4" if source_codec == "mp4v" else ".avi"
    video = write_video(str(tmp_path / f"clip{ext}"), moving_square_frames(5), source_codec, fps=7)
    output = tmp_path / "videos" / output_name if output_name else tmp_path / "videos"
    written = run_demo(tmp_path, "--video-input", video, "--output", str(output), "--min-output-size", "128",
                       "--confidence-threshold", "0")  # fmt: skip
    expected = str(output) if output_name else str(tmp_path / "videos" / "clip.mp4")
    assert written == [expected]
    frames, fps = read_video(expected)
    assert len(frames) == 5 and frames[0].shape == (96, 128, 3)
    assert fps == pytest.approx(7)


def test_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_demo(tmp_path, "--video-input", str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o.mp4"))
    video = write_video(str(tmp_path / "clip.avi"), moving_square_frames(1), "MJPG")
    with pytest.raises(ValueError, match="must end in"):
        run_demo(tmp_path, "--video-input", video, "--output", str(tmp_path / "o.mkv"))


def test_cli_subprocess_writes_pictures(tmp_path):
    image = write_image(str(tmp_path / "x.png"), np.random.default_rng(1).integers(0, 256, (40, 40, 3), np.uint8))
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--config-file", tiny_config_file(tmp_path),
           "--input", image, "--output", str(tmp_path / "pred"), "--min-output-size", "80"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cv2.imread(str(tmp_path / "pred" / "x.png")).shape == (80, 80, 3)


# ---- bad and unusual inputs ------------------------------------------------------------------
def write_16bit_png(path, left: int = 64, right: int = 192) -> str:
    """A 16-bit grayscale PNG (48x64): left half ``left``, right half ``right`` on the 8-bit scale."""
    deep = np.empty((48, 64), np.uint16)
    deep[:, :32], deep[:, 32:] = left * 257, right * 257
    Image.fromarray(deep).save(path)
    assert Image.open(path).mode == "I;16"
    return str(path)


def truncated_jpeg(path) -> str:
    write_image(str(path), np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def test_a_16bit_png_is_drawn_with_its_pixels_not_white(tmp_path):
    image = write_16bit_png(tmp_path / "deep.png")
    assert (read_image(image, "BGR") == 255).all()  # what detectron2's reader (the demo's before) gives
    out = tmp_path / "drawn.png"
    run_demo(
        tmp_path, "--input", image, "--output", str(out), "--min-output-size", "0", "--confidence-threshold", "1.0"
    )  # fmt: skip  (no detection drawn: the picture is the image)
    drawn = cv2.imread(str(out))
    assert drawn.shape == (48, 64, 3)
    assert np.abs(drawn[:, :30].astype(int) - 64).max() <= 1 and np.abs(drawn[:, 34:].astype(int) - 192).max() <= 1


def test_a_truncated_jpeg_among_good_images_is_named_and_skipped(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_image(str(images / "a.png"), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    broken = truncated_jpeg(images / "b.jpg")
    (images / "c.png").write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    out = tmp_path / "out"
    with pytest.raises(demo.SkippedInputsError) as error:
        run_demo(tmp_path, "--input", str(images), str(tmp_path / "gone.jpg"), "--output", str(out))
    message = str(error.value)
    assert message.startswith("3 of 4 input(s) could not be read and were skipped (1 output(s) written)")
    assert f"cannot decode image {broken} (truncated or corrupt?)" in message
    assert (
        f"{images / 'c.png'} is an HTML page" in message and f"image file not found: {tmp_path / 'gone.jpg'}" in message
    )
    assert set(error.value.skipped) == {broken, str(images / "c.png"), str(tmp_path / "gone.jpg")}
    assert error.value.written == [str(out / "a.png")] and os.listdir(out) == ["a.png"]  # the good one is drawn


def test_cli_names_a_truncated_jpeg_and_exits_with_status_1_without_a_traceback(tmp_path, capsys):
    broken = truncated_jpeg(tmp_path / "broken.jpg")
    good = write_image(str(tmp_path / "good.png"), np.full((40, 40, 3), 90, np.uint8))
    args = ["--config-file", tiny_config_file(tmp_path), "--input", broken, good, "--output", str(tmp_path / "pred")]
    assert demo.cli(args) == 1  # what `python tools/demo.py ...` exits with
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert "error: 1 of 2 input(s) could not be read" in stderr and f"cannot decode image {broken}" in stderr
    assert cv2.imread(str(tmp_path / "pred" / "good.png")) is not None

    weights = tmp_path / "model_final.pth"
    weights.write_text("<html><body>Access denied</body></html>")
    assert demo.cli([*args[:-2], "--output", str(tmp_path / "p2"), "--opts", "MODEL.WEIGHTS", str(weights)]) == 1
    assert f"error: Cannot load checkpoint {weights}: it is an HTML page" in capsys.readouterr().err


def test_videos_that_cannot_be_read_are_named(tmp_path):
    text = tmp_path / "clip.mp4"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0a1b\nsize 99\n")
    with pytest.raises(demo.BadInputError, match=rf"cannot read video {re.escape(str(text))}: it is a git-lfs pointer"):
        run_demo(tmp_path, "--video-input", str(text), "--output", str(tmp_path / "o.mp4"))
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(demo.BadInputError, match=rf"{re.escape(str(empty))}: it is an empty file"):
        run_demo(tmp_path, "--video-input", str(empty), "--output", str(tmp_path / "o.mp4"))
    video = write_video(str(tmp_path / "cut.avi"), moving_square_frames(3), "MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(cut.read_bytes()[:300])  # the headers and no frame
    with pytest.raises(demo.BadInputError, match=rf"cannot read video {re.escape(video)}: "):
        run_demo(tmp_path, "--video-input", video, "--output", str(tmp_path / "o.mp4"))
