"""Loose dishes: dishes on no tray, tracked in the picture (tracking stage).

A dish seen before its tray is (the tray entering under blur, cut by the
picture's edge) or lifted off a tray is tracked loose, with Norfair's
Kalman filter in picture coordinates. Loose dishes are never billed as
they are; once a tray is found under one, the loose record is handed to that
tray (:meth:`LooseDishes.adopt`): its votes then count on the tray, so a dish
seen only while its tray was entering, then hidden by a hand, still counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from norfair import Detection as NfDetection

from edge.config import TrackerConfig
from edge.track import norfair_adapter as nfa
from edge.track.dish_frame import DishDetection
from edge.track.evidence import Box, DishRecord, centre, shift4
from edge.track.lanes import DishIds, dish_tracker, observe, retune_dish_tracker
from edge.track.spots import SpotMemory, at_spots
from edge.track.trays import Tray, box_points


class LooseDishes:
    """Dishes on no tray of one stream.

    Parameters
    ----------
    config : TrackerConfig
        IoU threshold, hit counter and initialisation delay.
    n_classes : int
        Number of detector classes.
    ids : DishIds
        The stream's dish ids (shared with the dishes on trays).
    spots : SpotMemory, optional
        Learns the places where loose detections recur (``billing.noise_guard``);
        with it, every loose dish's picture cells are recorded and a dish seen
        mostly at spots is never handed to a tray.
    min_hits : int
        Detections away from spots a loose dish needs to be handed to a tray.
    nearest : bool
        Hand a loose dish to the tray under it whose centre is nearest, not to
        the oldest (``billing.noise_guard``).
    """

    def __init__(self, config: TrackerConfig, n_classes: int, ids: DishIds, *,
                 spots: SpotMemory | None = None, min_hits: int = 3,
                 nearest: bool = False) -> None:
        self.tracker = dish_tracker(config, config.hit_counter_max, static=False)
        self.records: dict[Any, DishRecord] = {}  # Norfair object -> record
        self.n_classes = n_classes
        self.ids = ids
        self.spots = spots
        self.min_hits = min_hits
        self.nearest = nearest

    def retune(self, config: TrackerConfig, *, spots: SpotMemory | None, min_hits: int,
               nearest: bool) -> None:
        """New settings from the next frame on; the loose dishes keep their tracks."""
        retune_dish_tracker(self.tracker, config, config.hit_counter_max)
        self.spots = spots
        self.min_hits = min_hits
        self.nearest = nearest

    def update(self, dets: list[DishDetection] | None, seq: int, period: int) -> None:
        """Track this frame's detections on no tray (None: the frame was not detected)."""
        if dets is None:
            self.tracker.update(None)
            nf: list[NfDetection] = []
        else:
            nf = [NfDetection(points=box_points(b), data=(c, s)) for b, c, s in dets]
            self.tracker.update(nf, period=period)
        det_ids = {id(d) for d in nf}
        live = set()
        for obj in self.tracker.tracked_objects:
            live.add(obj)
            rec = self.records.get(obj)
            if rec is None:
                rec = self.records[obj] = DishRecord(0, np.zeros(self.n_classes), first_seq=seq)
            observe(obj, rec, det_ids, seq, self.ids, places=self.spots is not None)
            rec.rel_box = nfa.position(obj)
        for obj in [o for o in self.records if o not in live]:
            rec = self.records.pop(obj)
            rec.alive = False
            if self.spots is not None:
                self.spots.learn(rec)

    def adopt(self, boxes: Mapping[Any, Box], trays: Mapping[Any, Tray]) -> None:
        """Hand dishes seen before their tray was to the tray they are on.

        An adopted record waits on the tray (``Tray.pending``); the first dish
        track the tray starts over it (in the picture) takes its votes and
        detections. One that no tray track continues counts from its place at
        adoption.

        Parameters
        ----------
        boxes : mapping
            Active tray object -> its box this frame (picture, pixels).
        trays : mapping
            Tray object -> :class:`Tray`.
        """
        for rec in self.records.values():
            if rec.adopted or not rec.gid or rec.hits == 0:
                continue
            if self.spots is not None and at_spots(rec, self.spots, self.min_hits):
                continue  # a spot the detector fires at, not a dish waiting for its tray
            obj = self._tray_under(centre(rec.rel_box), boxes)
            if obj is None:
                continue
            tray = trays[obj]
            tray.pending.append((rec, DishRecord(
                rec.gid, rec.votes.copy(), rec.hits, rec.first_seq, rec.last_seq,
                rec.rel_box - shift4(tray.frame.predicted), alive=False,
                best={k: list(v) for k, v in rec.best.items()}, from_loose=True,
                first_look=rec.first_look, last_look=rec.last_look,
                cells=dict(rec.cells) if rec.cells else None, views=rec.views)))
            rec.adopted = True

    def _tray_under(self, c: npt.NDArray[np.float64], boxes: Mapping[Any, Box]) -> Any:
        """The tray whose box holds point ``c``: the oldest, or with ``nearest`` the
        one whose centre is nearest (trays side by side overlap while one is
        lost and its box only predicted); None if none does."""
        best, dist = None, np.inf
        for obj, tb in boxes.items():
            if tb[0] <= c[0] <= tb[2] and tb[1] <= c[1] <= tb[3]:
                if not self.nearest:
                    return obj
                d = float(np.linalg.norm(c - centre(tb)))
                if d < dist:
                    best, dist = obj, d
        return best
