"""The model registry on the box: every detector model it holds, by SHA-256, and its state.

First stop of a rollout (``upload / fleet ─▶ registry ─▶ shadow ─▶ promote``):
a model arrives (the site config's ``detector.model``, an upload, a fleet
download), is checked against the detector contract and kept under
``storage.dir/models`` as ``<sha256>.onnx``. A file never changes once
there, so its name is its identity; what changes is its state, kept in
``index.json`` beside the files with a history of every change:

- ``serving``: the model every stream detects with (at most one);
- ``shadow``: the candidate running beside it on a sample of frames (at most one);
- ``candidate``: stored and valid, not running;
- ``retired``: served or was tried once, kept so it can come back.

The serving model leaves ``serving`` only when another one takes its place
(it becomes ``retired``), so the box always knows what it serves.

Durability: a model file is written to ``incoming/`` and renamed into place
after fsync; the index is replaced atomically (:func:`edge.fsutil.write_atomic`).
A kill at any point leaves the old index or the new one, and at worst a file
the index does not name yet, which :meth:`ModelStore.open` takes in again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
import structlog

from edge.detect.contract import check_contract, read_model_info
from edge.detect.model_info import CONTRACT_KEYS, ModelInfo
from edge.errors import ModelError
from edge.fsutil import make_private_dir, write_atomic
from edge.rollout import MODEL_STATES, ModelState, RolloutError

MODELS_SUBDIR = "models"
"""The store's folder under ``storage.dir``."""
INDEX_FILE = "index.json"
INCOMING_DIR = "incoming"
SOURCES = ("config", "upload", "fleet", "training")
"""Where a model came from; ``recovered`` marks a file taken in again without its
index entry (a corrupt index, or a kill between the file and the index)."""
RECOVERED = "recovered"
ID_CHARS = 12
MIN_REF_CHARS = 6
MAX_PROVENANCE_CHARS = 500
MAX_NAME_CHARS = 120
MAX_HISTORY = 1000
"""History events the index keeps (oldest dropped first)."""
_CHUNK = 1 << 20

_log = structlog.get_logger("edge.rollout")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model in the store.

    Attributes
    ----------
    id : str
        First :data:`ID_CHARS` hex characters of ``sha256``.
    sha256 : str
        Of the file, 64 lowercase hex characters.
    name : str
        ``metadata_props["name"]``, else the file name's stem it arrived with,
        else ``"model"``.
    version : str
        The contract's ``model_version``.
    classes : tuple of str
        Class names, index = class id.
    input_size : (int, int)
        Network input ``(width, height)``, pixels.
    embedding_dim : int or None
        ``D`` of the ``embeddings`` output, if any.
    provenance : dict of str to str
        The other ``metadata_props`` (training run, data, architecture), each
        value cut to :data:`MAX_PROVENANCE_CHARS`.
    size_bytes : int
        File size.
    added_at : float
        Unix seconds.
    source : str
        One of :data:`SOURCES`, or ``"recovered"``.
    state : ModelState
        ``serving``, ``candidate``, ``shadow`` or ``retired``.
    path : Path
        ``<store>/<sha256>.onnx``.
    """

    id: str
    sha256: str
    name: str
    version: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    embedding_dim: int | None
    provenance: dict[str, str]
    size_bytes: int
    added_at: float
    source: str
    state: ModelState
    path: Path

    def to_json(self) -> dict[str, Any]:
        """Every field but ``path`` (JSON-ready), and ``file``: the file's name."""
        return {"id": self.id, "sha256": self.sha256, "name": self.name,
                "version": self.version, "classes": list(self.classes),
                "input_size": list(self.input_size), "embedding_dim": self.embedding_dim,
                "provenance": dict(self.provenance), "size_bytes": self.size_bytes,
                "added_at": self.added_at, "source": self.source, "state": self.state,
                "file": self.path.name}

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> ModelEntry:
        """The entry :meth:`to_json` wrote, its file under ``root``."""
        state = data["state"]
        if state not in MODEL_STATES:
            raise ValueError(f"state {state!r} is not one of {MODEL_STATES}")
        width, height = data["input_size"]
        return cls(id=str(data["id"]), sha256=str(data["sha256"]), name=str(data["name"]),
                   version=str(data["version"]), classes=tuple(map(str, data["classes"])),
                   input_size=(int(width), int(height)),
                   embedding_dim=(None if data["embedding_dim"] is None
                                  else int(data["embedding_dim"])),
                   provenance={str(k): str(v) for k, v in data["provenance"].items()},
                   size_bytes=int(data["size_bytes"]), added_at=float(data["added_at"]),
                   source=str(data["source"]), state=state, path=root / str(data["file"]))


class ModelStore:
    """The models under one folder, their states and their history.

    Methods are thread-safe: the event loop and worker threads
    (``asyncio.to_thread``) share one store. Hashing and checking a new file
    run outside the lock.

    Parameters
    ----------
    root : Path
        The store's folder, ``storage.dir / MODELS_SUBDIR``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._entries: dict[str, ModelEntry] = {}
        self._history: list[dict[str, Any]] = []
        self._config_sha: str | None = None

    @property
    def index_path(self) -> Path:
        """``<root>/index.json``."""
        return self.root / INDEX_FILE

    def open(self) -> None:
        """Make the folder (owner-only), clear what interrupted writes left, read the index.

        Entries whose file is missing or altered are dropped; a corrupt index
        is set aside (``index.json.corrupt-<unix seconds>``) and the entries
        rebuilt from the files present, as candidates. Each is logged; none
        stops the daemon.
        """
        with self._lock:
            make_private_dir(self.root)
            shutil.rmtree(self.root / INCOMING_DIR, ignore_errors=True)
            for leftover in self.root.glob(f".{INDEX_FILE}.*.tmp"):
                leftover.unlink(missing_ok=True)
            self._entries, self._history, self._config_sha = {}, [], None
            changed = False
            try:
                self._load_index()
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                aside = self.index_path.with_name(f"{INDEX_FILE}.corrupt-{int(time.time())}")
                self.index_path.replace(aside)
                _log.warning("model_index_corrupt", path=str(self.index_path),
                             kept_as=str(aside), error=str(err))
                self._entries, self._history, self._config_sha = {}, [], None
                changed = True
            changed |= self._drop_broken()
            changed |= self._recover_files()
            if changed:
                self._save()

    def entries(self) -> list[ModelEntry]:
        """Every model, newest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: (-e.added_at, e.sha256))

    def get(self, ref: str) -> ModelEntry:
        """The model ``ref`` names: its id, its sha256 or a unique hex prefix of
        at least :data:`MIN_REF_CHARS` characters.

        Raises
        ------
        RolloutError
            404: unknown, ambiguous or too short.
        """
        with self._lock:
            return self._get(ref)

    def incoming_path(self) -> Path:
        """A fresh path under ``<root>/incoming`` for a file being written (an upload,
        a download); what is left there is removed at the next :meth:`open`."""
        incoming = self.root / INCOMING_DIR
        make_private_dir(incoming)
        return incoming / f"{secrets.token_hex(8)}.part"

    def add_file(self, src: Path, *, source: str, actor: str | None = None,
                 name: str | None = None, move: bool = False) -> tuple[ModelEntry, bool]:
        """Check ``src`` and keep it as a ``candidate``.

        Parameters
        ----------
        src : Path
            The model file.
        source : str
            One of :data:`SOURCES`. A ``config`` model is read as the detector
            backends read it (an Ultralytics export passes); the others must
            meet the contract (:func:`edge.detect.contract.check_contract`).
        actor : str, optional
            Who added it, for the history.
        name : str, optional
            The file name it arrived with (its stem names the model unless the
            metadata has a ``name``).
        move : bool
            Rename ``src`` into the store instead of copying it; ``src`` is
            consumed whatever the outcome (moved, or removed when refused or
            already stored).

        Returns
        -------
        entry : ModelEntry
        added : bool
            False when a file with this sha256 was stored already (nothing written).

        Raises
        ------
        RolloutError
            422 when the file is not a usable model (the message lists every
            problem), 507 when it cannot be written (a full disk); nothing of
            it is left in the store.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        src = Path(src)
        try:
            return self._add(src, source=source, actor=actor, name=name, move=move)
        finally:
            if move:
                src.unlink(missing_ok=True)

    def set_state(self, ref: str, state: ModelState, *, actor: str | None = None,
                  reason: str = "") -> ModelEntry:
        """Put the model ``ref`` in ``state`` and record it in the history.

        A new serving model retires the former one; a new shadow sends the
        former shadow back to ``candidate``. Whether a change makes sense (the
        serving model retired while nothing replaces it) is the controller's
        call: the store only keeps states unique and recorded.

        Raises
        ------
        RolloutError
            404 unknown model.
        """
        if state not in MODEL_STATES:
            raise ValueError(f"state must be one of {MODEL_STATES}, got {state!r}")
        with self._lock:
            entry = self._get(ref)
            if entry.state == state:
                return entry
            displaced: ModelState = "retired" if state == "serving" else "candidate"
            for other in list(self._entries.values()):
                if other.state == state and state in ("serving", "shadow"):
                    self._move(other, displaced, actor, f"replaced by {entry.id}")
            entry = self._move(entry, state, actor, reason)
            self._save()
            return entry

    def serving(self) -> ModelEntry | None:
        """The serving model, if any."""
        with self._lock:
            return self._in_state("serving")

    def shadowed(self) -> ModelEntry | None:
        """The shadowed candidate, if any."""
        with self._lock:
            return self._in_state("shadow")

    def rollback_target(self) -> ModelEntry | None:
        """The model that served just before the serving one (or before the last
        one that served, when none serves now), if it is still stored."""
        with self._lock:
            served = [e["sha256"] for e in reversed(self._history) if e["to"] == "serving"]
            current = served[0] if served else None
            previous = next((sha for sha in served if sha != current), None)
            entry = self._entries.get(previous) if previous is not None else None
            return entry if entry is not None and entry.path.is_file() else None

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """State changes, newest first: ``{"at", "model", "version", "from", "to",
        "actor", "reason"}`` (``from`` is None when the model was added)."""
        with self._lock:
            events = self._history[-limit:] if limit > 0 else []
            return [{k: v for k, v in e.items() if k != "sha256"} for e in reversed(events)]

    def adopt(self, config_model: Path) -> ModelEntry:
        """Register the site config's ``detector.model`` at daemon start; the serving entry.

        When the file differs from the one recorded at the last start (a first
        start, or the operator changed ``detector.model``) it becomes serving.
        Otherwise the store's serving model stays serving, so a promotion
        survives restarts, unless its file is gone (then the config's model
        serves again).

        Raises
        ------
        RolloutError
            422 when the config's model is missing or unusable, 507 when it
            cannot be stored.
        """
        entry, _ = self.add_file(Path(config_model), source="config", actor="config")
        with self._lock:
            current = self._in_state("serving")
            if self._config_sha != entry.sha256:
                reason = ("first start" if self._config_sha is None
                          else "detector.model changed in the site config")
            elif current is None or not current.path.is_file():
                reason = ("no model serves" if current is None
                          else "the serving model's file is missing")
                _log.warning("model_serving_missing", serving=current and current.id,
                             using=entry.id, path=str(config_model), reason=reason)
            else:
                return current
            self._config_sha = entry.sha256
            self._save()
        return self.set_state(entry.sha256, "serving", actor="config", reason=reason)

    def note_config(self, sha256: str) -> None:
        """Record ``sha256`` as the site config's ``detector.model`` (a config change
        applied live): the next start keeps what serves unless the config changes again."""
        with self._lock:
            if self._config_sha != sha256:
                self._config_sha = sha256
                self._save()

    # -- inside the lock ---------------------------------------------------------------

    def _get(self, ref: str) -> ModelEntry:
        key = ref.strip().lower()
        if len(key) < MIN_REF_CHARS or any(c not in "0123456789abcdef" for c in key):
            raise RolloutError(f"model {ref!r}: give its id (12 hex characters, "
                               "`dishtracker models list` names them) or at least "
                               f"{MIN_REF_CHARS} of them", 404)
        found = [e for sha, e in self._entries.items() if sha.startswith(key)]
        if not found:
            raise RolloutError(f"no model {ref!r} in the registry; `dishtracker models list` "
                               "names them", 404)
        if len(found) > 1:
            raise RolloutError(f"model {ref!r} is ambiguous: it names "
                               f"{', '.join(sorted(e.id for e in found))}; give more of it",
                               404)
        return found[0]

    def _in_state(self, state: ModelState) -> ModelEntry | None:
        return next((e for e in self._entries.values() if e.state == state), None)

    def _move(self, entry: ModelEntry, state: ModelState, actor: str | None,
              reason: str) -> ModelEntry:
        moved = replace(entry, state=state)
        self._entries[entry.sha256] = moved
        self._event(moved, entry.state, actor, reason)
        return moved

    def _event(self, entry: ModelEntry, before: str | None, actor: str | None,
               reason: str) -> None:
        self._history.append({"at": time.time(), "model": entry.id, "sha256": entry.sha256,
                              "version": entry.version, "from": before, "to": entry.state,
                              "actor": actor, "reason": reason})
        del self._history[:-MAX_HISTORY]

    def _save(self) -> None:
        data = {"format": 1, "config_sha256": self._config_sha,
                "models": [e.to_json() for e in self._entries.values()],
                "history": self._history}
        write_atomic(self.index_path, json.dumps(data, indent=1).encode(), suffix=".tmp")

    def _load_index(self) -> None:
        data = json.loads(self.index_path.read_bytes())
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ValueError("not a model index of format 1")
        entries = [ModelEntry.from_json(item, self.root) for item in data["models"]]
        history = [dict(e) for e in data["history"]]
        self._entries = {e.sha256: e for e in entries}
        self._history = history
        sha = data.get("config_sha256")
        self._config_sha = sha if isinstance(sha, str) else None

    def _drop_broken(self) -> bool:
        broken = []
        for entry in self._entries.values():
            problem = ("missing" if not entry.path.is_file()
                       else "altered" if _sha256(entry.path) != entry.sha256 else None)
            if problem is not None:
                _log.warning("model_file_dropped", model=entry.id, version=entry.version,
                             state=entry.state, path=str(entry.path), problem=problem)
                broken.append(entry.sha256)
        for sha in broken:
            del self._entries[sha]
        return bool(broken)

    def _recover_files(self) -> bool:
        """Take in ``<sha256>.onnx`` files the index does not name, as candidates."""
        found = False
        for path in sorted(self.root.glob("*.onnx")):
            if path.stem in self._entries:
                continue
            try:
                sha = _sha256(path)
                if sha != path.stem:
                    raise ModelError(f"its content's sha256 is {sha}")
                entry = _describe(path, sha, check_contract(path), source=RECOVERED,
                                  name=None, state="candidate")
            except (ModelError, OSError) as err:
                _log.warning("model_file_not_recovered", path=str(path), error=str(err))
                continue
            self._entries[sha] = entry
            self._event(entry, None, None, "recovered without its index entry")
            _log.warning("model_file_recovered", model=entry.id, version=entry.version,
                         path=str(path))
            found = True
        return found

    # -- adding a file ---------------------------------------------------------------

    def _add(self, src: Path, *, source: str, actor: str | None, name: str | None,
             move: bool) -> tuple[ModelEntry, bool]:
        shown = name or src.name
        try:
            sha = _sha256(src)
        except OSError as err:
            raise RolloutError(f"cannot read the model {shown}: {err.strerror}", 422) from err
        with self._lock:
            if sha in self._entries:
                return self._entries[sha], False
        try:
            info = check_contract(src) if source != "config" else read_model_info(src)
        except ModelError as err:
            raise RolloutError(str(err).replace(str(src), shown, 1), 422) from err
        stem = name or (None if src.parent == self.root / INCOMING_DIR else src.name)
        target = self.root / f"{sha}.onnx"
        entry = _describe(src, sha, info, source=source, name=stem, state="candidate",
                          stored=target)
        try:
            self._place(src, target, move=move)
        except OSError as err:
            raise RolloutError(_write_failure(self.root, err), _write_status(err)) from err
        with self._lock:
            if sha in self._entries:  # another thread stored it meanwhile
                return self._entries[sha], False
            self._entries[sha] = entry
            self._event(entry, None, actor, f"added ({source})")
            try:
                self._save()
            except OSError as err:
                del self._entries[sha]
                self._history.pop()
                target.unlink(missing_ok=True)
                raise RolloutError(_write_failure(self.root, err), _write_status(err)) from err
        _log.info("model_added", model=entry.id, version=entry.version, source=source,
                  actor=actor, size_bytes=entry.size_bytes)
        return entry, True

    def _place(self, src: Path, target: Path, *, move: bool) -> None:
        """Put ``src``'s bytes at ``target`` durably (fsync, rename, fsync the folder)."""
        tmp = self.incoming_path()
        try:
            if move:
                try:
                    src.replace(tmp)
                except OSError as err:
                    if err.errno != errno.EXDEV:
                        raise
                    shutil.copyfile(src, tmp)
            else:
                shutil.copyfile(src, tmp)
            with tmp.open("rb+") as fh:
                os.fchmod(fh.fileno(), 0o600)
                os.fsync(fh.fileno())
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(path: Path, sha: str, info: ModelInfo, *, source: str, name: str | None,
              state: ModelState, stored: Path | None = None) -> ModelEntry:
    """The entry of the checked model file ``path``, to be kept at ``stored``
    (default: where it is)."""
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    title = props.get("name") or (Path(name).stem if name else "") or "model"
    provenance = {k: v[:MAX_PROVENANCE_CHARS] for k, v in props.items()
                  if k not in CONTRACT_KEYS and k != "name"}
    return ModelEntry(id=sha[:ID_CHARS], sha256=sha, name=_printable(title)[:MAX_NAME_CHARS],
                      version=info.model_version, classes=info.class_names,
                      input_size=info.input_size, embedding_dim=info.embedding_dim,
                      provenance=provenance, size_bytes=path.stat().st_size,
                      added_at=time.time(), source=source, state=state,
                      path=stored if stored is not None else path)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text).strip() or "model"


def _write_status(err: OSError) -> int:
    return 507 if err.errno in (errno.ENOSPC, errno.EDQUOT) else 500


def _write_failure(root: Path, err: OSError) -> str:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the model store {root} is full ({err.strerror}); nothing was kept: free "
                "space under storage.dir (retired models can go) and try again")
    return f"cannot write to the model store {root}: {err.strerror or err}; nothing was kept"
