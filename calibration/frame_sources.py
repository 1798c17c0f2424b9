"""Calibration frames for INT8 quantization: images, a video, or simulator renders.

Feeds :mod:`calibration.quantize`, which letterboxes each frame exactly as
the detection stage does. Every source yields ``(height, width, 3)`` uint8
BGR images, the layout of decoded camera frames, together with a frame count
for the progress bar. Simulator seeds 90000-99999 (:data:`edge.seeds.HELD_OUT`)
are held out for evaluation and refused here, as the dataset export refuses
them for training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.dataset import level_for
from edge.errors import ConfigError, InputFormatError
from edge.seeds import refuse_held_out

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".h264")
DEFAULT_MAX_FRAMES = 200


def image_frames(path: Path, max_frames: int = DEFAULT_MAX_FRAMES,
                 ) -> tuple[int, Iterator[npt.NDArray[np.uint8]]]:
    """Calibration frames from a directory of images (searched recursively) or a video file.

    Parameters
    ----------
    path : Path
        Directory with ``.jpg``/``.jpeg``/``.png`` files, or a video PyAV decodes.
    max_frames : int
        At most this many frames, spread evenly over the sorted files (or,
        for a video, over its frame count when the container declares it).

    Returns
    -------
    count : int
        Frames the iterator will yield (for a video without a declared frame
        count, an upper bound).
    frames : iterator of np.ndarray
        ``(height, width, 3)`` uint8 BGR images.

    Raises
    ------
    InputFormatError
        ``path`` does not exist, holds no images, or is not a readable video.
    """
    if max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_frames(path, max_frames)
    if not path.is_dir():
        raise InputFormatError(f"--frames {path}: not a directory of images or a video "
                               f"({', '.join(VIDEO_SUFFIXES)})")
    files = image_files(path)
    if not files:
        raise InputFormatError(f"--frames {path}: no images ({', '.join(IMAGE_SUFFIXES)}) "
                               "in it or below it")
    picked = [files[i] for i in _spread(len(files), max_frames)]

    def read() -> Iterator[npt.NDArray[np.uint8]]:
        import cv2  # noqa: PLC0415 - imported with the command, not with the CLI

        for file in picked:
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise InputFormatError(f"{file}: not a readable image")
            yield np.ascontiguousarray(image, dtype=np.uint8)

    return len(picked), read()


def image_files(folder: Path) -> list[Path]:
    """The images (:data:`IMAGE_SUFFIXES`) in ``folder`` and below it, in name order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _spread(total: int, count: int) -> list[int]:
    """``min(total, count)`` distinct indices spread evenly over ``range(total)``."""
    if total <= count:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def _video_frames(path: Path, max_frames: int) -> tuple[int, Iterator[npt.NDArray[np.uint8]]]:
    import av  # noqa: PLC0415 - PyAV loads only for video input

    try:
        with av.open(str(path)) as container:
            declared = int(container.streams.video[0].frames or 0)
    except (av.error.FFmpegError, IndexError) as err:
        raise InputFormatError(f"--frames {path}: not a readable video: {err}") from err
    wanted = set(_spread(declared, max_frames)) if declared else None

    def read() -> Iterator[npt.NDArray[np.uint8]]:
        kept = 0
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if kept >= max_frames:
                    break
                if wanted is None or index in wanted:
                    kept += 1
                    yield frame.to_ndarray(format="bgr24")
        if kept == 0:
            raise InputFormatError(f"--frames {path}: the video has no decodable frames")

    return (len(wanted) if wanted is not None else max_frames), read()


def check_calibration_seeds(seeds: Sequence[int]) -> None:
    """Refuse held-out evaluation seeds (90000-99999) as calibration data.

    Raises
    ------
    HeldOutSeedError
        Naming up to five offending seeds.
    """
    refuse_held_out(seeds, "calibration (it would leak the test set into the model; use "
                    "training seeds such as 1000-1059)")


def sim_frames(seeds: Sequence[int], frames_per_seed: int, *, every: int = 10,
               size: tuple[int, int] = (640, 480),
               ) -> tuple[int, Iterator[npt.NDArray[np.uint8]]]:
    """Calibration frames rendered with the simulator.

    Each seed renders its scene (difficulty cycled as the dataset export's
    ``mix`` does, classes balanced as in training) and keeps every
    ``every``-th frame until it has ``frames_per_seed``.

    Returns
    -------
    count : int
        ``len(seeds) * frames_per_seed``.
    frames : iterator of np.ndarray
        ``(height, width, 3)`` uint8 BGR images (raw renders, not H.264-coded).

    Raises
    ------
    HeldOutSeedError
        A seed lies in 90000-99999.
    """
    check_calibration_seeds(seeds)
    if not seeds or frames_per_seed < 1 or every < 1:
        raise ConfigError(f"need seeds and --frames-per-seed >= 1 and every >= 1, got "
                          f"{len(seeds)} seed(s), {frames_per_seed}, {every}")

    def read() -> Iterator[npt.NDArray[np.uint8]]:
        from edge.sim.scene import Scene  # noqa: PLC0415 - the renderer loads its sprites

        for seed in seeds:
            scene = Scene(seed, size=size, difficulty=level_for(seed, "mix"), balanced=True)
            for index in range(frames_per_seed * every):
                image, _ = scene.render(index)
                if index % every == 0:
                    yield image

    return len(seeds) * frames_per_seed, read()
