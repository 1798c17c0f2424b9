"""The tray tracker: detections become trays and the dishes on them (tracking stage).

Dishes move with the tray they sit on. Per frame, for one stream:

1. **Trays** are associated (:mod:`edge.track.trays`).
2. Each tray's **dish frame** is predicted and the dishes re-measure it, a
   rigid group (:mod:`edge.track.dish_frame`); a frame the detector skipped
   moves trays by optical flow.
3. **Loose dishes** (on no tray) are tracked in the picture and handed to the
   tray found under them (:mod:`edge.track.loose`).
4. **Dishes on trays** are tracked in their tray's coordinates
   (:mod:`edge.track.lanes`), with lifetime **class evidence**
   (:mod:`edge.track.evidence`); fragments of one dish are merged when a
   tray's dishes are read (:mod:`edge.track.fragments`).

The output, :class:`edge.frames.TrayTracking`, says where every tray is; a
tray's dishes are read with :meth:`TrayTracker.evidence`. The tracker knows
nothing of prices, lines or bills: billing (:mod:`edge.billing.biller`) tells
it when a tray's track is to end (:meth:`TrayTracker.end`) and which trays
are closed (:meth:`TrayTracker.set_closed`: a closed tray is re-identified
only where ``may_return`` allows).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from norfair import Detection as NfDetection

from edge.config import TrackerConfig
from edge.frames import DishEvidence, Frame, Track, TrayObservation, TrayTracking
from edge.geometry import box_iou, nms
from edge.track import norfair_adapter as nfa
from edge.track.dish_frame import DishDetection, OpticalFlow, rigid_shift
from edge.track.evidence import Box, DishRecord, centre, shift4
from edge.track.fragments import merge_fragments, since_switch
from edge.track.lanes import DishIds, DishLanes, assign
from edge.track.loose import LooseDishes
from edge.track.spots import SpotMemory, at_spots
from edge.track.trays import MayReturn, Tray, TrayAssociation
from edge.track.views import VIEW_EVERY, ViewSet, crop_view

TRAY_KEY = "tray"
SPOT_RECHECK = 1.25  # a record's spot verdict is renewed when its detections grow by this factor
DUPLICATE_IOU = 0.6  # cross-class duplicates in one frame
VIEW_IOU = 0.5  # a dish track takes the view of the detection it overlaps this much


class TrayTracker:
    """Tracks the trays of one stream and the dishes on them.

    Parameters
    ----------
    class_names : sequence of str
        The detector's class names; the tray class is named ``tray``.
    config : TrackerConfig
        IoU threshold, hit counters, initialisation delay, optical flow.
    direction : (float, float)
        The counter's direction of travel in the picture (trays slide along it).
    width, height : int
        Frame size, pixels.
    permanent_hits, permanent_span : int
        Detections, and detected frames from the first to the last, after which
        a dish lives as long as its tray.
    may_return : callable, optional
        ``(x, y) -> bool``: where a closed tray may be re-identified.
    first_tray_id : int
        The first tray's number (a stream's trays are numbered on from where
        its previous tracker stopped).
    noise_guard : bool
        Drop dishes fixed in the picture while their tray slides under them and
        dishes seen mostly at spots where the detector fires on its own
        (:mod:`edge.track.spots`), and carry a lost tray's dish frame over the
        gap (``billing.noise_guard``).
    """

    def __init__(self, class_names: Sequence[str], config: TrackerConfig,
                 direction: tuple[float, float], *, width: int, height: int,
                 permanent_hits: int = 3, permanent_span: int = 1,
                 may_return: MayReturn | None = None, noise_guard: bool = False,
                 first_tray_id: int = 1) -> None:
        self.class_names = tuple(class_names)
        self.config = config
        self.noise_guard = noise_guard
        self.width, self.height = width, height
        self.tray_class = (self.class_names.index(TRAY_KEY) if TRAY_KEY in self.class_names
                           else -1)
        n = len(self.class_names)
        self._trays = TrayAssociation(config, direction, width=width, height=height,
                                      may_return=may_return, first_id=first_tray_id)
        self._ids = DishIds()
        self._spots = SpotMemory() if noise_guard else None
        self._min_hits = permanent_hits
        self._loose = LooseDishes(config, n, self._ids, spots=self._spots,
                                  min_hits=permanent_hits, nearest=noise_guard)
        self._lanes = DishLanes(config, self._trays.slots, n, self._ids,
                                permanent_hits=permanent_hits, permanent_span=permanent_span,
                                track_places=noise_guard)
        self._flow = OpticalFlow(config.optical_flow)
        self._since_detection = 1
        self._seq = -1
        self._ended: dict[int, Tray] = {}  # trays whose track ended this frame

    # -- the frame loop -------------------------------------------------------------------

    def update(self, frame: Frame, detections: Any) -> TrayTracking:
        """Advance one frame (``detections``: :class:`edge.frames.Detections`, or
        None when the frame was not detected)."""
        seq = self._seq = frame.seq
        period = self._since_detection
        detected = detections is not None
        if detected:
            self._ids.looks += 1
        self._ended = {}
        self._flow.start(frame.image)
        tray_dets, dish_dets, dish_embeddings = self._split(detections)
        objs = self._trays.update(tray_dets if detected else None, period, frame.capture_time)
        trays = self._trays.trays
        alive, merged = self._trays.merge_duplicates(set(objs))
        active = [obj for obj in trays if obj in alive]  # in order of birth
        matched = {obj for obj in objs if detected and nfa.matched(obj, tray_dets)}

        boxes = {obj: nfa.position(obj) for obj in active}
        for obj in active:
            trays[obj].frame.predict(boxes[obj], self._trays.typical_size[0],
                                     seq if self.noise_guard else None)
        self._loose.adopt(boxes, trays)
        assignment = assign(dish_dets, boxes, trays) if detected else {}
        for obj in active:
            tray = trays[obj]
            previous = tray.frame.origin
            if detected:
                boxes[obj] = self._rigid(obj, tray, boxes[obj], assignment.get(obj, []),
                                         obj in matched)
            else:
                tray.frame.commit(tray.frame.predicted)
            if not detected and previous is not None and tray.box.any():
                # a frame the detector skipped (under load): optical flow moves the
                # tray (in detected frames that miss it, blur or hands make flow
                # no better than the motion model: measured on the tuning set)
                moved = self._flow.box_motion(tray.box)
                if moved is not None:
                    boxes[obj] = tray.box + shift4(moved)
                    nfa.move(obj, boxes[obj])
                    tray.frame.origin = previous + moved
                    tray.frame.box_centre = centre(boxes[obj])
            tray.box = boxes[obj]
        self._flow.finish()
        # loose first: an adopted loose dish is then where it is now, for the tray
        # track that continues it
        self._loose.update(assignment.get(None, []) if detected else None, seq, period)
        self._lanes.update({trays[obj]: assignment.get(obj, []) for obj in active},
                           detected, seq, period)
        self._since_detection = 1 if detected else self._since_detection + 1
        if dish_embeddings is not None and dish_dets and self._ids.looks % VIEW_EVERY == 0:
            self._take_views(frame, dish_dets, dish_embeddings)

        observations = []
        for obj, tray in list(trays.items()):
            gone = obj not in alive and nfa.is_gone(self._trays.tracker, obj)
            observations.append(self._observe(tray, active=obj in alive, gone=gone))
            if gone:
                self._ended[tray.tid] = self._trays.remove(obj)
        return TrayTracking(seq, self._tracks(active, matched), tuple(observations),
                            tuple((keep.tid, drop.tid) for keep, drop in merged))

    def _observe(self, tray: Tray, *, active: bool, gone: bool) -> TrayObservation:
        b = tray.box
        return TrayObservation(tray.tid, (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                               tray.first_seen, active, self._in_view(b), gone)

    def _take_views(self, frame: Frame, dishes: list[DishDetection],
                    embeddings: npt.NDArray[np.float32]) -> None:
        """Offer each dish track matched this frame the look of its detection
        (:mod:`edge.track.views`): its embedding, and its crop if kept."""
        records: list[DishRecord] = []
        boxes = []
        for tray in self._trays.trays.values():
            origin = tray.frame.current()
            for rec in tray.records.values():
                if rec.alive and rec.last_seq == frame.seq:
                    records.append(rec)
                    boxes.append(rec.rel_box + shift4(origin))
        for rec in self._loose.records.values():
            if rec.last_seq == frame.seq:
                records.append(rec)
                boxes.append(rec.rel_box)
        if not records:
            return
        det_boxes = np.stack([d[0] for d in dishes])
        iou = box_iou(np.stack(boxes), det_boxes)
        for rec, row in zip(records, iou, strict=True):
            j = int(row.argmax())
            if row[j] < VIEW_IOU:
                continue
            if rec.views is None:
                rec.views = ViewSet()
            rec.views.offer(embeddings[j], frame.seq,
                            functools.partial(crop_view, frame.image, det_boxes[j]))

    def _split(self, detections: Any) -> tuple[list[NfDetection], list[DishDetection],
                                               npt.NDArray[np.float32] | None]:
        """Tray detections for Norfair, dish detections, and the dishes' embeddings
        in their order (None when the detector gives none)."""
        if detections is None or len(detections) == 0:
            return [], [], None
        is_tray = detections.classes == self.tray_class
        trays = self._trays.detections(detections.boxes[is_tray], detections.scores[is_tray])
        # one object seen as two look-alike classes in one frame must not start two tracks
        keep = np.sort(nms(detections.boxes[~is_tray], detections.scores[~is_tray],
                           DUPLICATE_IOU))
        d_boxes = detections.boxes[~is_tray][keep]
        d_scores = detections.scores[~is_tray][keep]
        d_classes = detections.classes[~is_tray][keep]
        dishes = [(np.asarray(b, np.float64), int(c), float(s))
                  for b, s, c in zip(d_boxes, d_scores, d_classes, strict=True)]
        embeddings = (None if detections.embeddings is None
                      else detections.embeddings[~is_tray][keep])
        return trays, dishes, embeddings

    def _rigid(self, obj: Any, tray: Tray, box: Box, dets: list[DishDetection],
               tray_detected: bool) -> Box:
        """Move the dish frame by the dishes, and an undetected tray with them.

        The tray's own box never drags the dishes: when it jumps (a blurred tray
        seen as a part of itself, an arm over it) the dish frame keeps to the
        dishes. A tray not detected this frame but seen through its dishes moves
        with them and stays alive (the rigid group measures it).
        """
        previous = tray.frame.origin
        live = [r for r in tray.records.values() if r.alive and r.hits >= 2]
        width = max(float(box[2] - box[0]), self._trays.typical_size[0], 1.0)
        shift = rigid_shift(tray.frame, live, dets, width, tray_detected)
        pred = tray.frame.predicted
        tray.frame.commit(pred if shift is None else pred + shift)
        if tray_detected or shift is None or previous is None or tray.frame.origin is None:
            return box
        corrected = tray.box + shift4(tray.frame.origin - previous)
        nfa.move(obj, corrected)
        nfa.seen_without_detection(obj, self._since_detection)  # as alive as if detected
        tray.frame.box_centre = centre(corrected)
        return corrected

    # -- what billing asks ----------------------------------------------------------------

    def _tray(self, tray_id: int) -> tuple[Any, Tray] | None:
        for obj, tray in self._trays.trays.items():
            if tray.tid == tray_id:
                return obj, tray
        return None

    def evidence(self, tray_id: int) -> tuple[DishEvidence, ...]:
        """The dishes of a tray held now or ended this frame, fragments merged, in
        order of their track ids (empty for an unknown tray); with
        ``noise_guard``, less those of a tray its track carried before
        (:func:`edge.track.fragments.since_switch`)."""
        found = self._tray(tray_id)
        tray = found[1] if found is not None else self._ended.get(tray_id)
        if tray is None:
            return ()
        # a detection fixed in the picture while the tray slid under it is no dish
        dishes = [r for r in (*tray.records.values(), *tray.archive,
                              *(copy for _, copy in tray.pending))
                  if r.gid and r.hits > 0 and not self._fixed(r, fresh=True)]
        width = max(self._trays.typical_size[0], float(tray.box[2] - tray.box[0]), 1.0)
        out = []
        drift = tray.drift_at if self.noise_guard else None
        merged = merge_fragments(dishes, width, drift)
        if self.noise_guard:
            merged = since_switch(merged, self._min_hits)
        for rec in sorted(merged, key=lambda r: r.gid):
            if self._fixed(rec, spots=False):  # its fragments, each too short to tell,
                # together can slide far enough (spots are judged per fragment)
                continue
            cls, share = rec.decide()
            seen = rec.views if rec.views is not None else ViewSet()
            out.append(DishEvidence(rec.gid, cls, share, rec.hits, float(rec.votes.sum()),
                                    rec.span, rec.density, rec.longest,
                                    self._ids.looks - rec.last_look, tuple(seen.views),
                                    seen.appearance()))
        return tuple(out)

    def observations(self) -> tuple[TrayObservation, ...]:
        """The trays held now, as the last frame left them (in order of birth)."""
        return tuple(self._observe(tray, active=True, gone=False)
                     for tray in self._trays.trays.values())

    def end(self, tray_id: int) -> None:
        """End a tray's track for good now (it left the picture past the checkout
        line): never re-identified. Its evidence stays readable this frame."""
        found = self._tray(tray_id)
        if found is not None:
            nfa.end(found[0])
            self._ended[tray_id] = self._trays.remove(found[0])

    def set_closed(self, tray_id: int, closed: bool) -> None:
        """Mark a tray closed (re-identified only where ``may_return`` allows) or open."""
        found = self._tray(tray_id)
        if found is not None:
            found[1].closed = closed

    # -- output ---------------------------------------------------------------------------

    def _tracks(self, active: list[Any], matched: set[Any]) -> tuple[Track, ...]:
        out = []
        for obj in active:
            tray = self._trays.trays.get(obj)
            if tray is None or not self._in_view(tray.box):
                continue
            b = tray.box
            out.append(Track(tray.tid, (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                             self.tray_class, TRAY_KEY, 1.0, 0, obj in matched, tray.tid))
            shift = shift4(tray.frame.current())
            for dobj, rec in tray.records.items():
                out.extend(self._dish_track(dobj, rec, rec.rel_box + shift, tray.tid))
        for dobj, rec in self._loose.records.items():
            out.extend(self._dish_track(dobj, rec, rec.rel_box, None))
        return tuple(out)

    def _in_view(self, box: Box) -> bool:
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        return bool(0 <= cx < self.width and 0 <= cy < self.height)

    def _dish_track(self, obj: Any, rec: DishRecord, box: Box, tray_id: int | None
                    ) -> list[Track]:
        if (not nfa.visible(obj) or rec.votes.sum() <= 0 or rec.adopted
                or not self._in_view(box) or self._fixed(rec)):
            return []
        cls, share = rec.decide()
        return [Track(rec.gid, (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                      cls, self.class_names[cls], share,
                      rec.hits, rec.last_seq == self._seq, tray_id)]

    def _fixed(self, rec: DishRecord, *, spots: bool = True, fresh: bool = False) -> bool:
        """Whether a record is a place the detector fires at, not a dish
        (``billing.noise_guard``): fixed in the picture while its tray slid under
        it, or (with ``spots``) seen mostly at a spot (:mod:`edge.track.spots`).

        For the picture (asked every frame) the spot verdict is kept until the
        spots change or the record has :data:`SPOT_RECHECK` times the detections
        it had; a bill (``fresh``) always judges anew."""
        if not self.noise_guard:
            return False
        if rec.fixed_in_picture():
            return True
        memory = self._spots
        if not spots or memory is None or not memory.n_spots or not rec.cells:
            return False
        cached = rec.spot_verdict
        if (not fresh and cached is not None and cached[1] == memory.version
                and rec.hits < cached[0] * SPOT_RECHECK):
            return cached[2]
        verdict = at_spots(rec, memory, self._min_hits)
        rec.spot_verdict = (rec.hits, memory.version, verdict)
        return verdict

    def retune(self, config: TrackerConfig, *, permanent_hits: int, permanent_span: int,
               noise_guard: bool, may_return: MayReturn | None) -> None:
        """Use new settings from the next frame on; the trays in view keep their
        tracks and their dishes' evidence.

        The IoU threshold, hit counters and initialisation delay apply to the
        tracks alive and to new ones; optical flow from the next frame.
        ``noise_guard`` switched on learns spots from now on and guards fully
        the trays that appear after the change (the ones in view have no
        picture places recorded from before it).
        """
        self.config = config
        self._trays.retune(config)
        self.retune_return(may_return)
        if noise_guard and self._spots is None:
            self._spots = SpotMemory()
        elif not noise_guard:
            self._spots = None
        self.noise_guard = noise_guard
        self._min_hits = permanent_hits
        self._loose.retune(config, spots=self._spots, min_hits=permanent_hits,
                           nearest=noise_guard)
        self._lanes.retune(config, permanent_hits=permanent_hits,
                           permanent_span=permanent_span, track_places=noise_guard)
        self._flow.enabled = config.optical_flow

    def retune_return(self, may_return: MayReturn | None) -> None:
        """Where closed trays may be re-identified, from the next frame on."""
        self._trays.may_return = may_return

    @property
    def live_tracks(self) -> int:
        """Trays and dishes alive now."""
        trays = self._trays.trays.values()
        return len(trays) + sum(len(t.records) for t in trays) + len(self._loose.records)
