"""Tray states become bills: the billing stage of one stream.

Tracking (:class:`edge.track.tray_tracker.TrayTracker`) says where every tray
is and what is on it; this stage decides when a tray's bill closes and what
it says. Per tray, one lifecycle (:class:`Phase`):

* ``ARRIVING``: not yet seen before the checkout line (a tray that enters the
  picture past the line is never billed here: it was billed upstream, or it is
  going back).
* ``OPEN``: seen before the line; its bill closes once, when its centre
  crosses the line (with hysteresis, :mod:`edge.billing.line`), or when its
  track ends at or past the line (``left_view``; a tray that leaves the
  picture past the line ends there).
* ``BILLED``: closed with a bill. ``EMPTY``: closed without one (nothing
  billable on it: an empty tray, a stack of them, a false tray the detector
  saw in an arm).

A bill's lines are the tray's dishes (fragments merged by tracking) seen at
least ``billing.min_item_hits`` times, over at least :data:`MIN_SPAN` frames (by
one of its tracks alone), in
at least :data:`MIN_DENSITY` of the detected frames in between (or at least
:data:`SPARSE_HITS` times), with vote mass :data:`MIN_VOTE_MASS`,
named and priced by the menu; a line whose class holds less than
``billing.confirm_below`` of its evidence needs review. Two tray tracks found
to be one tray merge their states: the tray is billed once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from edge.billing.line import BEFORE, PAST, UNKNOWN, CheckoutLine
from edge.billing.menu import Menu
from edge.billing.model import Bill, BillerStep, BillItem, TrayState, round_money
from edge.billing.photo import bill_photo, dish_boxes
from edge.config import SiteConfig, StreamConfig
from edge.frames import Detections, DishEvidence, Frame, Track, TrayObservation
from edge.track.tray_tracker import TrayTracker

log = structlog.get_logger()

STATE_EVERY = 5  # frames between refreshes of an open tray's bill lines (live view)
MIN_VOTE_MASS = 0.6  # sum of squared scores a dish needs to be billed (weak ghosts are not)
# frames a dish's evidence must last, first sighting to last: a false detection
# that lives a few frames (a reflection, an arm, steam) is not a dish ...
MIN_SPAN = 5
# ... and evidence shorter than this must name one class: two false detections
# that coincide at one place rarely agree on it (the validation set's dishes seen
# only 6-7 frames under hands did, with their whole vote)
SHORT_SPAN = 10
SHORT_SHARE = 0.8
# detections its class must hold (hits times its share of the vote): a track that
# fused a few short false detections of different classes names none of them
# often (on the tuning grid's point b: 9 hits, 29 % one class)
MIN_CLASS_HITS = 5
# share of the detected frames from first sighting to last in which a dish was
# seen: false detections that recur at one place now and then are seen in few ...
MIN_DENSITY = 0.3
# ... unless seen this often: a dish under hands for most of its passage still is
# (on the tuning seeds, occluded dishes had 11-18; recurring false ones at most 8)
SPARSE_HITS = 10
# detected frames (1 s at 20 fps) a dish of a tray that is otherwise seen must be
# unseen at the checkout line to flag the bill ``hidden_at_line``: on the tuning
# set's hard level 6 flagged a fifth of the right bills (hands reach over trays
# near the line all the time), 20 a sixth, and caught more of the wrong ones
HIDDEN_LOOKS = 20
SNAPSHOT_QUALITY = 80


Namer = Callable[[DishEvidence, Menu], BillItem | None]
"""Names one dish's bill line (None: not billable)."""


class Phase(Enum):
    """Where a tray is in its billing life."""

    ARRIVING = "arriving"
    OPEN = "open"
    BILLED = "billed"
    EMPTY = "empty"

    @property
    def closed(self) -> bool:
        """Billed, or closed without a bill."""
        return self in (Phase.BILLED, Phase.EMPTY)


@dataclass
class _Account:
    """Billing state of one tray."""

    phase: Phase = Phase.ARRIVING
    side: int = UNKNOWN  # of the checkout line, with hysteresis
    items: tuple[BillItem, ...] = ()  # the open bill, refreshed every STATE_EVERY frames
    items_seq: int = -1


class TrayBiller:
    """Tracks trays on one stream (with :class:`TrayTracker`) and closes their bills.

    Implements :class:`edge.billing.model.Biller`.

    Parameters
    ----------
    stream_id : str
        Stream the bills belong to.
    tracker : TrayTracker
        The stream's tray tracker (built with ``may_return`` from ``line``).
    menu : Menu
        Names, prices and billability of the classes.
    line : CheckoutLine
        Where bills close.
    min_item_hits : int
        Detections a dish needs before it is billed.
    run_id : str
        Part of every bill id: unique per biller life (default: start time in ms).
    clock_offset : float or None
        Added to a frame's ``capture_time`` to get Unix time; default
        ``time.time() - time.monotonic()`` (live); 0 for evaluation.
    snapshots : bool
        Attach a JPEG of the closing frame to each bill, the billed tray and its
        lines marked (:mod:`edge.billing.photo`).
    noise_guard : bool
        Bill a dish only over :data:`MIN_SPAN` frames and :data:`MIN_DENSITY`
        (or :data:`SPARSE_HITS`) (``billing.noise_guard``).
    first_tray_id : int
        The number ``tracker`` gives its first tray (what
        :attr:`next_tray_id` counts on from).
    namer : callable, optional
        ``namer(dish, menu)`` names each line instead of ``menu.item`` (the
        open-set decision with the site's examples,
        :meth:`edge.learn.openset.Learner.name`).
    """

    def __init__(self, stream_id: str, tracker: TrayTracker, menu: Menu, line: CheckoutLine,
                 *, min_item_hits: int = 3, run_id: str | None = None,
                 clock_offset: float | None = None, snapshots: bool = True,
                 noise_guard: bool = False, first_tray_id: int = 1,
                 namer: Namer | None = None) -> None:
        self.stream_id = stream_id
        self.namer = namer
        self.tracker = tracker
        self.menu = menu
        self.line = line
        self.min_item_hits = min_item_hits
        self.run_id = run_id or str(int(time.time() * 1000))
        self.clock_offset = ((time.time() - time.monotonic()) if clock_offset is None
                             else clock_offset)
        self.snapshots = snapshots
        self.noise_guard = noise_guard
        self._accounts: dict[int, _Account] = {}
        self._tracks: tuple[Track, ...] = ()
        self._seq = -1
        self.first_tray_id = first_tray_id
        self._last_tray_id = 0

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Advance one frame (``detections`` None when the frame was not detected)."""
        self._seq = frame.seq
        step = self.tracker.update(frame, detections)
        self._tracks = step.tracks  # where a closing bill's dishes are, for its photo
        for kept, dropped in step.merges:
            self._merge(kept, dropped)
        closed: list[Bill] = []
        open_trays = []
        for obs in step.trays:
            self._last_tray_id = max(self._last_tray_id, obs.tray_id)
            acc = self._accounts.setdefault(obs.tray_id, _Account())
            active, gone = obs.active, obs.gone
            if active and acc.side == PAST and not obs.in_view:
                # it left the picture past the line: ended (never resurrected)
                self.tracker.end(obs.tray_id)
                active, gone = False, True
            if active:
                acc.side = self.line.side(*obs.centre(), acc.side)
                if acc.side == BEFORE and acc.phase is Phase.ARRIVING:
                    acc.phase = Phase.OPEN
                if acc.side == PAST and acc.phase is Phase.OPEN:
                    # crossed now, or a merged tray past the line whose half that
                    # crossed first closed without a bill
                    self._close(closed, frame, obs, acc, "crossed")
                if not acc.phase.closed:
                    open_trays.append((obs, acc))
            elif gone:
                del self._accounts[obs.tray_id]
                at_line = self.line.distance(*obs.centre()) > -self.line.hysteresis
                if acc.phase is Phase.OPEN and at_line:
                    self._close(closed, frame, obs, acc, "left_view")
        # open bills, the tray nearest to (or over) the checkout line first
        open_trays.sort(key=lambda oa: -self.line.distance(*oa[0].centre()))
        states = tuple(self._state(obs, acc) for obs, acc in open_trays)
        return BillerStep(step.tracks, states, tuple(closed))

    def _merge(self, kept: int, dropped: int) -> None:
        """Two tray tracks were one tray: billed once. A tray closed without a bill
        (a false tray seen in an arm, ahead of the real one) passes no bill state
        on: the tray it merges into is billed when it is past the line."""
        keep = self._accounts.setdefault(kept, _Account())
        drop = self._accounts.pop(dropped, _Account())
        if Phase.BILLED in (keep.phase, drop.phase):
            keep.phase = Phase.BILLED
        elif keep.phase is drop.phase is Phase.ARRIVING:
            keep.phase = Phase.ARRIVING
        else:  # seen before the line by either: billed when past it
            keep.phase = Phase.OPEN
        keep.items_seq = -1
        self.tracker.set_closed(kept, keep.phase.closed)

    def _billable(self, tray_id: int) -> list[DishEvidence]:
        """The tray's dishes with the evidence a bill line needs (any class)."""
        return [dish for dish in self.tracker.evidence(tray_id)
                if dish.hits >= self.min_item_hits and dish.vote_mass >= MIN_VOTE_MASS
                and (not self.noise_guard or _evident(dish))]

    def _items(self, dishes: list[DishEvidence]) -> tuple[BillItem, ...]:
        return tuple(item for item, _ in self._lines(dishes))

    def _lines(self, dishes: list[DishEvidence]) -> list[tuple[BillItem, DishEvidence]]:
        """The bill lines of ``dishes``, each with the dish it names."""
        lines = []
        for dish in dishes:
            item = (self.namer(dish, self.menu) if self.namer is not None
                    else self.menu.item(dish.class_id, dish.share, dish.track_id))
            if item is not None:
                lines.append((item, dish))
        return lines

    def _close(self, closed: list[Bill], frame: Frame, obs: TrayObservation, acc: _Account,
               reason: str) -> None:
        """Close a tray's bill into ``closed``, once; a tray with nothing to bill
        closes without a bill."""
        dishes = self._billable(obs.tray_id)
        lines = self._lines(dishes)
        acc.phase = Phase.BILLED if lines else Phase.EMPTY
        self.tracker.set_closed(obs.tray_id, True)
        if lines:
            review = ("hidden_at_line",) if self.noise_guard and _hidden(dishes) else ()
            closed.append(self._bill(frame, obs, reason, lines, review))
        else:
            log.info("tray_closed_without_items", stream=self.stream_id, tray=obs.tray_id,
                     reason=reason, frame=frame.seq)

    def _bill(self, frame: Frame, obs: TrayObservation, reason: str,
              lines: list[tuple[BillItem, DishEvidence]], review: tuple[str, ...] = ()) -> Bill:
        items = tuple(item for item, _ in lines)
        boxes = dish_boxes(items, self._tracks, obs.tray_id)
        snapshot = question = None
        if any(item.unknown for item in items):
            review = (*review, "unknown_dish")
        if self.snapshots and frame.image.size > 3:
            photo = bill_photo(frame.image, obs.tray_id, obs.box, items, boxes)
            snapshot = _jpeg(photo)
            if any(item.unknown or item.proposals for item in items):
                question = _jpeg(frame.image)  # a question for the labelling workspace
        return Bill(
            bill_id=f"{self.stream_id}-{self.run_id}-{obs.tray_id}", stream_id=self.stream_id,
            tray_id=obs.tray_id, opened_at=obs.first_seen + self.clock_offset,
            closed_at=frame.capture_time + self.clock_offset, frame_seq=frame.seq,
            items=items, total=round_money(sum(i.price for i in items)),
            needs_review=bool(review) or any(i.needs_review for i in items), reason=reason,
            tray_box=obs.box, snapshot_jpeg=snapshot, review=review,
            views=tuple(dish.views for _, dish in lines),
            line_boxes=tuple(None if b is None else (float(b[0]), float(b[1]), float(b[2]),
                                                     float(b[3])) for b in boxes),
            frame_jpeg=question,
        )

    def _state(self, obs: TrayObservation, acc: _Account) -> TrayState:
        if acc.items_seq < 0 or self._seq - acc.items_seq >= STATE_EVERY:
            acc.items, acc.items_seq = self._items(self._billable(obs.tray_id)), self._seq
        return TrayState(self.stream_id, obs.tray_id, obs.box, acc.items,
                         round_money(sum(i.price for i in acc.items)))

    def retune(self, site: SiteConfig, class_names: Sequence[str]) -> None:
        """Use ``site``'s tracker, billing and menu settings from the next frame on;
        the trays in view keep their tracks and evidence, and bills that close
        from now on follow the new settings (see :meth:`TrayTracker.retune`)."""
        guard = site.billing.noise_guard
        self.tracker.retune(site.tracker, permanent_hits=site.billing.min_item_hits,
                            permanent_span=MIN_SPAN if guard else 1, noise_guard=guard,
                            may_return=returns_past(self.line))
        self.min_item_hits = site.billing.min_item_hits
        self.noise_guard = guard
        self.use_menu(make_menu(site, class_names))

    def use_line(self, line: CheckoutLine) -> None:
        """Close bills at ``line`` from the next frame on (same direction of travel:
        the trays' motion model keeps it). Each tray's side is found afresh: a
        tray seen before the old line that is past the new one closes now."""
        self.line = line
        self.tracker.retune_return(returns_past(line))
        for acc in self._accounts.values():
            acc.side = UNKNOWN

    def close_open(self, frame: Frame, review: str) -> tuple[Bill, ...]:
        """Close every open tray's bill now, flagged ``review`` (a reason of
        :data:`edge.billing.model.REVIEW_REASONS`): the stream is about to
        lose this tracker. Trays with nothing billable close without a bill."""
        closed: list[Bill] = []
        for obs in self.tracker.observations():
            acc = self._accounts.get(obs.tray_id)
            if acc is None or acc.phase is not Phase.OPEN:
                continue
            lines = self._lines(self._billable(obs.tray_id))
            acc.phase = Phase.BILLED if lines else Phase.EMPTY
            self.tracker.set_closed(obs.tray_id, True)
            if lines:
                closed.append(self._bill(frame, obs, "stream_changed", lines, (review,)))
        return tuple(closed)

    def use_menu(self, menu: Menu) -> None:
        """Name and price the lines of bills that close from now on with ``menu``
        (the trays in view and their evidence stay)."""
        self.menu = menu
        for acc in self._accounts.values():
            acc.items_seq = -1  # the live bill is re-read with the new prices

    @property
    def next_tray_id(self) -> int:
        """The number a tracker that continues this one gives its first tray."""
        return max(self._last_tray_id, self.first_tray_id - 1) + 1

    def open_trays(self) -> list[int]:
        """Ids of trays held whose bill is still open."""
        return [tid for tid, acc in self._accounts.items() if not acc.phase.closed]

    @property
    def live_tracks(self) -> int:
        """Trays and dishes alive now."""
        return self.tracker.live_tracks


def _jpeg(image: npt.NDArray[np.uint8]) -> bytes | None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
    return buf.tobytes() if ok else None


def _evident(dish: DishEvidence) -> bool:
    """Evidence a false detection cannot give (``billing.noise_guard``): seen over
    :data:`MIN_SPAN` frames by one track (short false detections that fragment
    merging fused do not count), with one class if under :data:`SHORT_SPAN`, its
    class seen about :data:`MIN_CLASS_HITS` times, in
    :data:`MIN_DENSITY` of the detected frames in between or :data:`SPARSE_HITS`
    times."""
    if dish.longest < MIN_SPAN or (dish.span < SHORT_SPAN and dish.share < SHORT_SHARE):
        return False
    if dish.share * dish.hits < MIN_CLASS_HITS:
        return False
    return dish.density >= MIN_DENSITY or dish.hits >= SPARSE_HITS


def _hidden(dishes: list[DishEvidence]) -> bool:
    """Whether part of the tray is hidden now (``billing.noise_guard``): a dish
    unseen for :data:`HIDDEN_LOOKS` detected frames while another was seen in
    the last one or two (a hand over part of the tray, not the whole tray
    blurred or lost). What else that hand covers, no camera can tell."""
    return (any(d.unseen >= HIDDEN_LOOKS for d in dishes)
            and any(d.unseen <= 1 for d in dishes))


def returns_past(line: CheckoutLine) -> Callable[[float, float], bool]:
    """Where a closed tray may be re-identified: at or past ``line``. A closed
    tray never comes back as a tray before the line: that is the next tray
    (it would not be billed)."""

    def may_return(x: float, y: float) -> bool:
        return line.distance(x, y) >= -line.hysteresis

    return may_return


def make_menu(site: SiteConfig, class_names: Sequence[str]) -> Menu:
    """The site's menu for the detector's classes."""
    return Menu(site.menu, class_names, site.billing.confirm_below)


def make_biller(stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],  # noqa: PLR0917
                width: int, height: int, run_id: str | None = None, *,
                clock_offset: float | None = None, snapshots: bool = True,
                first_tray_id: int = 1, namer: Namer | None = None) -> TrayBiller:
    """The full system for one stream, configured from the site config (``namer``:
    see :class:`TrayBiller`)."""
    menu = make_menu(site, class_names)
    line = CheckoutLine(stream.checkout, width, height)
    guard = site.billing.noise_guard
    tracker = TrayTracker(class_names, site.tracker, line.direction, width=width,
                          height=height, permanent_hits=site.billing.min_item_hits,
                          permanent_span=MIN_SPAN if guard else 1, noise_guard=guard,
                          may_return=returns_past(line), first_tray_id=first_tray_id)
    return TrayBiller(stream.id, tracker, menu, line, min_item_hits=site.billing.min_item_hits,
                      run_id=run_id, clock_offset=clock_offset, snapshots=snapshots,
                      noise_guard=guard, first_tray_id=first_tray_id, namer=namer)
