"""Numbered frames of a video, a folder or a network stream, for frame selection.

:mod:`calibration.select` reads a source twice: once to detect and track
every frame, once to write the chosen ones. Frames carry their 1-based number
as MOTChallenge's ``gt.txt`` counts them, so a selection can be joined with a
simulator sequence's ground truth:

* a **video** file: the n-th decoded frame is number n;
* a **folder**: a simulator or MOTChallenge sequence (``video.mp4`` in it) is
  its video; otherwise its images in name order, numbered by the digits of
  their names when every name is a number (``img1/000001.jpg``), else 1, 2 ...;
* a **URL** (``rtsp://``, ``http://`` ...): decoded live, at most
  ``max_frames`` frames; it cannot be read twice, so the frames are kept in
  memory as JPEG until the selection is written.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from calibration.frame_sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, image_files
from edge.errors import ConfigError, InputFormatError

Image = npt.NDArray[np.uint8]
LIVE_JPEG_QUALITY = 92


class NumberedFrames:
    """A source of ``(number, image)`` pairs (images ``(h, w, 3)`` uint8 BGR).

    Parameters
    ----------
    source : str
        Video file, folder or URL (see the module docstring).
    max_frames : int, optional
        Read at most this many frames; required for a URL.

    Raises
    ------
    InputFormatError
        The source does not exist, holds no frames or cannot be decoded.
    ConfigError
        A URL without ``max_frames``.
    """

    def __init__(self, source: str, max_frames: int | None = None) -> None:
        self.source = source
        self.max_frames = max_frames
        self.direction = (1.0, 0.0)
        self._video: Path | None = None
        self._images: list[tuple[int, Path]] = []
        self._kept: dict[int, bytes] = {}
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
        if "://" in source:
            if max_frames is None:
                raise ConfigError(f"--source {source}: a stream needs --max-frames")
            return
        path = Path(source)
        if path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise InputFormatError(f"--source {path}: not a video ({', '.join(VIDEO_SUFFIXES)})"
                                       " nor a folder of images")
            self._video = path
        elif path.is_dir():
            self._open_folder(path)
        else:
            raise InputFormatError(f"--source {path}: no such file or folder")
        if self._video is not None:
            self._probe(self._video)

    def _open_folder(self, path: Path) -> None:
        if (path / "video.mp4").is_file():
            self._video = path / "video.mp4"
            self._read_direction(path / "seqinfo.ini")
            return
        files = image_files(path)
        if not files:
            raise InputFormatError(f"--source {path}: no video.mp4 and no images "
                                   f"({', '.join(IMAGE_SUFFIXES)}) in it or below it")
        if all(f.stem.isdigit() for f in files) and len({int(f.stem) for f in files}) == len(files):
            self._images = sorted((int(f.stem), f) for f in files)
        else:
            self._images = list(enumerate(files, 1))

    def _read_direction(self, seqinfo: Path) -> None:
        parser = configparser.ConfigParser()
        if parser.read(seqinfo) and parser.has_option("DishTracker", "direction"):
            try:
                dx, dy = (float(v) for v in parser["DishTracker"]["direction"].split(","))
            except ValueError:
                return
            self.direction = (dx, dy)

    @staticmethod
    def _probe(video: Path) -> None:
        try:
            with av.open(str(video)) as container:
                if not container.streams.video:
                    raise InputFormatError(f"--source {video}: no video stream")
        except av.error.FFmpegError as err:
            raise InputFormatError(f"--source {video}: not a readable video: {err}") from err

    @property
    def count(self) -> int | None:
        """Frames :meth:`frames` will yield, where known beforehand."""
        if self._images:
            n = len(self._images)
            return n if self.max_frames is None else min(n, self.max_frames)
        if self._video is not None:
            with av.open(str(self._video)) as container:
                declared = int(container.streams.video[0].frames or 0)
            if declared:
                return declared if self.max_frames is None else min(declared, self.max_frames)
        return self.max_frames

    def frames(self) -> Iterator[tuple[int, Image]]:
        """Yield ``(number, image)`` in order.

        Raises
        ------
        InputFormatError
            An image or the video cannot be decoded, or no frame came.
        """
        n = 0
        for n, (number, image) in enumerate(self._decode(), 1):
            if self._video is None and not self._images:
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY,
                                                        LIVE_JPEG_QUALITY])
                if ok:
                    self._kept[number] = jpeg.tobytes()
            yield number, image
            if self.max_frames is not None and n >= self.max_frames:
                break
        if n == 0:
            raise InputFormatError(f"--source {self.source}: no decodable frames")

    def _decode(self) -> Iterator[tuple[int, Image]]:
        if self._images:
            for number, file in self._images:
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None:
                    raise InputFormatError(f"{file}: not a readable image")
                yield number, np.ascontiguousarray(image, np.uint8)
            return
        target = str(self._video) if self._video is not None else self.source
        try:
            with av.open(target, timeout=10.0) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for number, frame in enumerate(container.decode(stream), 1):
                    yield number, frame.to_ndarray(format="bgr24")
        except (av.error.FFmpegError, IndexError) as err:
            raise InputFormatError(f"--source {target}: cannot decode: {err}") from err

    def pick(self, numbers: set[int]) -> Iterator[tuple[int, Image]]:
        """Yield the frames numbered ``numbers`` again, in order."""
        if self._video is None and not self._images:
            for number in sorted(numbers):
                data = np.frombuffer(self._kept[number], np.uint8)
                yield number, np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)
            return
        last = max(numbers, default=0)
        for number, image in self._decode():
            if number in numbers:
                yield number, image
            if number >= last:
                break
