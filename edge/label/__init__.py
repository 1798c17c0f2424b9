"""The labelling workspace: a site's staff label selected frames, several at once.

Beside the loop back of the data flow (``journal ─▶ examples``): frames chosen
by ``dishtracker calibrate select`` are imported (:mod:`edge.label.importer`)
into a SQLite store under ``storage.dir`` (:mod:`edge.label.store`); the
detector proposes boxes and classes for each (:mod:`edge.label.proposer`, its
own ONNX Runtime session in one worker thread); the proposals are ranked
again after every accepted label by nearest neighbours over the workspace's
own labels in the detector's embedding space (:mod:`edge.label.ranking`);
frames are leased to one labeller at a time and every write is a new
revision, refused when stale; :mod:`edge.label.progress` counts classes and
agreement, :mod:`edge.label.coco` exports the project's COCO format for
``calibrate train``. :mod:`edge.label.workspace` puts these together off the
event loop for the HTTP routes (:mod:`edge.web.label_routes`). The page is
``/label.html``; ``docs/LABELLING.md`` describes the whole.
"""
