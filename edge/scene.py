"""Scene calibration files: where trays move on one camera, and its checkout line.

Written by ``dishtracker calibrate scene`` (:mod:`calibration.scene`), read by
the config loader (:func:`edge.config.load_config`) when a stream names one::

    [[streams]]
    id = "cam1"
    url = "rtsp://10.0.0.5/stream1"
    scene = "cam1.scene.toml"    # relative to the site config's folder

The file's ``[checkout]`` table has the fields of a stream's ``checkout`` table
(:class:`edge.config.CheckoutConfig`) that calibration measures: ``line``,
``direction``, ``region`` and ``speed_px_s``; they replace the stream's, so the
checkout line (:mod:`edge.billing.line`) and the tray-motion model
(:mod:`edge.track.trays`, which follows ``direction``) use them. The
hysteresis stays the site config's. ``[calibration]`` records how the figures
were measured (source, size, frames, spread); only ``size`` is checked.
Pure Python: the daemon reads scene files without OpenCV or the
``calibration`` package. The format is in ``docs/FORMATS.md``.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge import fsutil
from edge.config import CheckoutConfig, format_errors
from edge.config import _toml_string as toml_string
from edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

SCENE_FORMAT = "dishtracker-scene/1"
CHECKOUT_KEYS = ("line", "direction", "region", "speed_px_s")

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class SceneCalibration:
    """One camera's measured scene geometry, in source pixels of a ``size`` picture.

    Attributes
    ----------
    size : (int, int)
        ``(width, height)`` of the picture the figures are measured in.
    direction : (float, float)
        Unit vector of tray travel (x right, y down).
    speed_px_s : float
        Typical tray speed while moving, pixels per second (stops excluded).
    region : tuple of (float, float)
        The counter region (where trays moved): a convex polygon, ``(n, 2)``.
    line : ((float, float), (float, float))
        The proposed checkout line: two points, perpendicular to ``direction``.
    source : str
        The video it was measured on (URL with its password masked).
    seconds : float
        Seconds of video analysed.
    frames : int
        Frames analysed.
    moving_frames : int
        Frames in which trays moved along ``direction`` (the speed's sample).
    direction_spread_deg : float
        Robust spread (1.4826 x median absolute deviation) of the per-frame
        directions around ``direction``, degrees.
    created : str
        UTC time of the calibration, ISO 8601.
    """

    size: tuple[int, int]
    direction: Point
    speed_px_s: float
    region: tuple[Point, ...]
    line: tuple[Point, Point]
    source: str = ""
    seconds: float = 0.0
    frames: int = 0
    moving_frames: int = 0
    direction_spread_deg: float = 0.0
    created: str = ""

    @property
    def direction_deg(self) -> float:
        """Direction of travel in degrees, clockwise from left-to-right (y down)."""
        return math.degrees(math.atan2(self.direction[1], self.direction[0]))

    def checkout_fields(self) -> dict[str, Any]:
        """The ``checkout`` fields this calibration sets (keys of :data:`CHECKOUT_KEYS`)."""
        return {"line": self.line, "direction": self.direction, "region": self.region,
                "speed_px_s": self.speed_px_s}


def _num(v: float) -> str:
    return repr(round(float(v), 3) + 0.0)  # + 0.0: no "-0.0"


def _point(p: Point) -> str:
    return f"[{_num(p[0])}, {_num(p[1])}]"


def format_scene(scene: SceneCalibration) -> str:
    """The scene file's TOML text (see the module docstring)."""
    return "\n".join([
        "# Scene calibration of one camera, written by `dishtracker calibrate scene`.",
        "# Use it from the site config:  [[streams]] ... scene = \"<this file>\"",
        "# Its [checkout] fields replace the stream's checkout line, direction,",
        "# region and speed_px_s; hysteresis_px stays in the site config.",
        f"format = {toml_string(SCENE_FORMAT)}",
        "",
        "[checkout]",
        f"line = [{_point(scene.line[0])}, {_point(scene.line[1])}]",
        f"direction = [{scene.direction[0]:.6f}, {scene.direction[1]:.6f}]",
        f"region = [{', '.join(_point(p) for p in scene.region)}]",
        f"speed_px_s = {_num(scene.speed_px_s)}",
        "",
        "[calibration]",
        f"source = {toml_string(scene.source)}",
        f"size = [{int(scene.size[0])}, {int(scene.size[1])}]",
        f"seconds = {_num(scene.seconds)}",
        f"frames = {int(scene.frames)}",
        f"moving_frames = {int(scene.moving_frames)}",
        f"direction_deg = {_num(scene.direction_deg)}",
        f"direction_spread_deg = {_num(scene.direction_spread_deg)}",
        f"created = {toml_string(scene.created)}",
        "",
    ])


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by all (the daemon may run as
    another user than the operator who calibrated)."""
    fsutil.write_atomic(path, data, mode=0o644)


def write_scene(path: Path, scene: SceneCalibration) -> None:
    """Write a scene file atomically (temporary file, fsync, rename)."""
    write_atomic(Path(path), format_scene(scene).encode("utf-8"))


def _table(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    table = data.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] table missing; is this a scene file written by "
                          f"`dishtracker calibrate scene`?")
    return table


MAX_SCENE_BYTES = 1 << 20
"""Largest scene file read (one is about 1 KiB)."""


def _read_small_file(path: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_SCENE_BYTES`.

    The path comes from the site config, which ``PUT /api/config`` sets: a FIFO
    or a device (``/dev/zero``) would block the reader or fill the memory.

    Raises
    ------
    OSError
        Cannot open it, not a regular file, or too large (``strerror`` says which).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without a writer
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = fh.read(MAX_SCENE_BYTES + 1)
    if len(data) > MAX_SCENE_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_SCENE_BYTES} bytes")
    return data


def read_scene(path: Path) -> SceneCalibration:
    """Read and validate a scene file.

    Raises
    ------
    ConfigError
        The file cannot be read, is not TOML, is not a scene file
        (``format``), or a field is missing or invalid; the message names the
        file, the field and the reason.
    """
    path = Path(path)
    try:
        raw = _read_small_file(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read scene file: {err.strerror}") from err
    except ValueError as err:  # a NUL in the path (os.open)
        raise ConfigError(f"{str(path)!r}: cannot read scene file: {err}") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    if data.get("format") != SCENE_FORMAT:
        raise ConfigError(f"{path}: format = {data.get('format')!r}, expected "
                          f"{SCENE_FORMAT!r} (a file written by `dishtracker calibrate scene`)")
    table = _table(data, "checkout", path)
    calib = _table(data, "calibration", path)
    errors = [f"checkout.{k}: missing" for k in CHECKOUT_KEYS if k not in table]
    errors += [f"checkout.{k}: not a scene field (valid: {', '.join(CHECKOUT_KEYS)}; "
               f"set hysteresis_px in the site config)" for k in table if k not in CHECKOUT_KEYS]
    checkout = None
    if not errors:
        try:
            checkout = CheckoutConfig.model_validate(table)
        except ValidationError as err:
            errors += [f"checkout.{line}" for line in format_errors(err)]
    size = calib.get("size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        errors.append(f"calibration.size: expected [width, height] in pixels, got {size!r}")
    if errors or checkout is None:
        raise ConfigError(f"{path}: invalid scene file:\n  " + "\n  ".join(errors))
    assert checkout.line is not None and checkout.region is not None  # keys checked above
    assert checkout.speed_px_s is not None  # likewise
    dx, dy = checkout.direction
    n = math.hypot(dx, dy)
    return SceneCalibration(
        size=(int(size[0]), int(size[1])), direction=(dx / n, dy / n),  # type: ignore[index]
        speed_px_s=checkout.speed_px_s, region=tuple(checkout.region), line=checkout.line,
        source=str(calib.get("source", "")), seconds=float(calib.get("seconds", 0.0)),
        frames=int(calib.get("frames", 0)), moving_frames=int(calib.get("moving_frames", 0)),
        direction_spread_deg=float(calib.get("direction_spread_deg", 0.0)),
        created=str(calib.get("created", "")),
    )
