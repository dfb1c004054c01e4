#!/usr/bin/env python
"""Draw Pix2Seq predictions on images, a video or webcam frames with detectron2's visualizers.

    python tools/demo.py --config-file configs/quickstart/pix2seq_shapes.yaml \
        --input "datasets/pix2seq_shapes/shapes_val/00000*.jpg" --output output/quickstart/predictions \
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth
    python tools/demo.py --config-file CONFIG --video-input clip.mp4 --output clip_pred.mp4 --opts MODEL.WEIGHTS W
    python tools/demo.py --config-file CONFIG --webcam --output webcam.avi --max-frames 300 --opts MODEL.WEIGHTS W

``--input`` takes files, folders and glob patterns; ``--output`` is a folder, or a file
name when there is a single input. For ``--video-input``/``--webcam``, ``--output`` is a
video file (``.mp4``: mp4v codec, ``.avi``: MJPG) or a folder that receives ``<name>.mp4``.
OpenCV here is headless: there is no window, so ``--output`` is always required.

Images are read with ``pix2seq_d2.data.image_io.read_image_file``, like training and evaluation:
EXIF orientation applied, 16-bit pixels scaled to 8 bits (not clipped to white), alpha dropped,
palette/grayscale expanded to colour.

Bad inputs: an image that cannot be read (missing, empty, truncated, corrupt, not an image) is
logged with its name and the reason and skipped; the other images are still drawn. At the end
the run fails with an error listing every skipped file (``SkippedInputsError``; the command
prints ``error: ...`` and exits with status 1, no traceback). A video that cannot be opened or
of which no frame can be decoded is an error naming the file; one that ends early (truncated)
is drawn up to there, with a warning. A bad ``MODEL.WEIGHTS`` file is an error saying what the
file is (``pix2seq_d2.checkpoint.checkpointer.NotACheckpointError``).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import glob
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from pix2seq_d2 import Pix2SeqPredictor
from pix2seq_d2.config import load_config
from pix2seq_d2.data.image_io import BadInputError, read_image_file
from pix2seq_d2.engine.launch import add_config_file_argument, run_command
from pix2seq_d2.utils.errors import MissingFileError
from pix2seq_d2.utils.file_kinds import describe_file_start

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}  # both write and read back with opencv-python-headless


class SkippedInputsError(BadInputError):
    """Some inputs could not be read and were skipped; the others were processed.

    Attributes: ``written`` (the outputs that were written) and ``skipped`` ({input path: reason}).
    """

    def __init__(self, skipped: dict[str, str], written: list[str], total: int):
        reasons = "; ".join(reason.rstrip(".") for reason in skipped.values())
        super().__init__(
            f"{len(skipped)} of {total} input(s) could not be read and were skipped ({len(written)} output(s) "
            f"written): {reasons}"
        )
        self.skipped = skipped
        self.written = written


# What the command line reports as "error: <message>" (exit status 1) instead of a traceback.


def read_inputs(
    paths: Iterable[str], logger: logging.Logger, skipped: dict[str, str]
) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, BGR image)`` for each readable image of ``paths`` (``read_image_file``); the others are logged
    and recorded in ``skipped`` ({path: reason})."""
    for path in paths:
        try:
            image = read_image_file(path, "BGR")
        except BadInputError as e:
            logger.warning(f"Skipping input {path}: {e}")
            skipped[path] = str(e)
            continue
        yield path, image


def finish_inputs(skipped: dict[str, str], written: list[str], total: int) -> list[str]:
    """``written``, or a :class:`SkippedInputsError` naming the skipped inputs when there are any."""
    if skipped:
        raise SkippedInputsError(skipped, written, total)
    return written


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.PIX2SEQ.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files, folders (their images, sorted) and glob patterns -> image paths. A file that does not exist is
    kept (it is then reported as skipped, like any unreadable input); a glob pattern that matches nothing,
    or no image at all, is a ``FileNotFoundError``."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            names = sorted(os.listdir(pattern))
            paths += [os.path.join(pattern, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(pattern) or not any(ch in pattern for ch in "*?["):
            paths.append(pattern)
        else:
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise MissingFileError(f"--input {pattern!r}: no file matches this pattern")
            paths += matches
    if not paths:
        raise MissingFileError(f"no images found for --input {patterns}")
    return paths


def output_path(output: str, image_path: str, num_inputs: int) -> str:
    if num_inputs == 1 and os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.basename(image_path))


def draw_scale(height: int, width: int, min_output_size: int) -> float:
    """How much to enlarge a picture so that its longest side is at least ``min_output_size``."""
    return max(1.0, min_output_size / max(height, width))


def draw_image(image_bgr: np.ndarray, instances: Instances, metadata: Metadata, min_output_size: int) -> np.ndarray:
    """Predictions drawn on one image -> an RGB picture, enlarged up to ``min_output_size``."""
    scale = draw_scale(*image_bgr.shape[:2], min_output_size)
    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata, scale=scale)
    return visualizer.draw_instance_predictions(instances.to("cpu")).get_image()


def video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The BGR frames of an opened ``cv2.VideoCapture`` until it runs out (or fails)."""
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        yield frame


def run_on_video(
    predictor: Pix2SeqPredictor,
    capture: cv2.VideoCapture,
    metadata: Metadata,
    min_output_size: int = 0,
    max_frames: int = 0,
) -> Iterator[np.ndarray]:
    """Detect objects in every frame of ``capture`` -> BGR frames with the predictions drawn.

    A ``VideoVisualizer`` keeps an object's colour from frame to frame. Frames are enlarged
    (nearest neighbour) so that their longest side is at least ``min_output_size``;
    ``max_frames > 0`` stops after that many frames.
    """
    visualizer = VideoVisualizer(metadata)
    for index, frame in enumerate(video_frames(capture)):
        if max_frames and index >= max_frames:
            break
        instances = predictor(frame)["instances"].to("cpu")
        scale = draw_scale(*frame.shape[:2], min_output_size)
        if scale > 1:
            size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
            instances = Instances(frame.shape[:2], **instances.get_fields())
            instances.pred_boxes = Boxes(instances.pred_boxes.tensor * scale)
        drawing = visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()
        yield np.ascontiguousarray(drawing[:, :, ::-1])


def video_output_path(output: str, name: str) -> str:
    """``--output`` for a video: a ``.mp4``/``.avi`` file as given, else a folder -> ``<folder>/<name>.mp4``."""
    if os.path.splitext(output)[1].lower() in VIDEO_CODECS:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        return output
    if os.path.splitext(output)[1]:
        raise ValueError(f"--output {output!r}: video files must end in one of {sorted(VIDEO_CODECS)}")
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.splitext(os.path.basename(name))[0] + ".mp4")


def write_video(frames: Iterator[np.ndarray], path: str, fps: float, total: int | None = None) -> int:
    """Write BGR frames to ``path`` with ``cv2.VideoWriter`` (codec from the extension) -> frames written."""
    fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[os.path.splitext(path)[1].lower()])
    writer = None
    count = 0
    try:
        for frame in tqdm(frames, total=total, desc="frames"):
            if writer is None:
                writer = cv2.VideoWriter(path, fourcc, fps, (frame.shape[1], frame.shape[0]), True)
                if not writer.isOpened():
                    raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
            writer.write(frame)
            count += 1
    except KeyboardInterrupt:  # the way to end a webcam session: keep what was recorded
        pass
    finally:
        if writer is not None:
            writer.release()
    return count


def check_video_file(path: str) -> None:
    """A :class:`BadInputError` naming ``path`` if it is not a file OpenCV may read as a video: missing
    (``FileNotFoundError``), a folder, empty, or text (an HTML page, a git-lfs pointer, ...)."""
    if not os.path.exists(path):
        raise MissingFileError(f"--video-input {path!r} is not a file")
    if os.path.isdir(path):
        raise BadInputError(f"cannot read video {path}: it is a folder (use --input for a folder of images)")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise BadInputError(f"cannot read video {path}: {e.strerror or e}") from e
    described = describe_file_start(head, os.path.getsize(path))
    if described is not None and described[0] in ("empty", "git-lfs", "html", "xml", "json", "yaml", "text"):
        raise BadInputError(f"cannot read video {path}: it is {described[1]}")


def open_video(path: str) -> cv2.VideoCapture:
    """``cv2.VideoCapture(path)``, opened, or an error naming the file and, where it tells, what it is."""
    check_video_file(path)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise BadInputError(
            f"cannot read video {path}: OpenCV cannot open it (not a video, corrupt, or a codec this OpenCV lacks)"
        )
    return capture


def process_video(args: argparse.Namespace, predictor: Pix2SeqPredictor, logger: logging.Logger) -> list[str]:
    """``--video-input`` or ``--webcam`` -> one output video."""
    if args.webcam:
        capture = cv2.VideoCapture(0)
        if not capture.isOpened():
            raise RuntimeError("cv2.VideoCapture cannot open the webcam")
    else:
        capture = open_video(args.video_input)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and math.isfinite(fps) and fps > 0 else 30.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not args.webcam else 0
        if args.max_frames:
            total = min(total, args.max_frames) if total > 0 else args.max_frames
        target = video_output_path(args.output, "webcam" if args.webcam else args.video_input)
        frames = run_on_video(predictor, capture, predictor.metadata, args.min_output_size, args.max_frames)
        count = write_video(frames, target, fps, total or None)
    finally:
        capture.release()
    if not args.webcam and count == 0:
        raise BadInputError(
            f"cannot read video {args.video_input}: no frame could be decoded (truncated, corrupt, or a codec this "
            "OpenCV lacks)"
        )
    if not args.webcam and total and count < total:
        logger.warning(f"only {count} of the {total} frames of {args.video_input} could be decoded: truncated?")
    logger.info(f"wrote {count} frame(s) at {fps:g} fps to {target}")
    return [target] if count else []


def process_images(args: argparse.Namespace, predictor: Pix2SeqPredictor, logger: logging.Logger) -> list[str]:
    """``--input`` images -> one picture each. Unreadable images are logged and skipped, then reported
    together (:class:`SkippedInputsError`) after the others were drawn."""
    paths = expand_inputs(args.input)
    written: list[str] = []
    skipped: dict[str, str] = {}
    progress = tqdm(paths, desc="demo", disable=len(paths) < 2)
    for path, image in read_inputs(progress, logger, skipped):
        instances = predictor(image)["instances"]
        drawing = draw_image(image, instances, predictor.metadata, args.min_output_size)
        target = output_path(args.output, path, len(paths))
        cv2.imwrite(target, drawing[:, :, ::-1])
        written.append(target)
        logger.log(logging.DEBUG, f"{path}: {len(instances)} detections -> {target}")
    logger.info(f"wrote {len(written)} picture(s) to {args.output}")
    return finish_inputs(skipped, written, len(paths))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="frames of the first webcam (cv2.VideoCapture(0))")
    parser.add_argument(
        "--output", required=True, help="images: folder (or file, for a single input); video: .mp4/.avi file or folder"
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="sets MODEL.PIX2SEQ.SCORE_THRESH_TEST")
    parser.add_argument(
        "--min-output-size", type=int, default=480, help="draw small images enlarged to this longest side (px)"
    )
    parser.add_argument("--max-frames", type=int, default=0, help="video/webcam: stop after this many frames (0: all)")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(args: argparse.Namespace) -> list[str]:
    """Run the demo; returns the paths written (pictures, or the one output video). When some input images
    cannot be read, the others are drawn, then :class:`SkippedInputsError` names the skipped ones."""
    setup_logger(name="fvcore")
    logger = setup_logger()
    predictor = Pix2SeqPredictor(setup_cfg(args))
    if args.input:
        return process_images(args, predictor, logger)
    return process_video(args, predictor, logger)


def cli(argv: list[str] | None = None) -> int:
    """The command line: ``main``; bad inputs and weights are ``error: ...`` and exit status 1."""
    args = get_parser().parse_args(argv)
    return run_command(lambda: main(args))


if __name__ == "__main__":
    sys.exit(cli())
