"""sd_notify: tell systemd the daemon is ready, alive, or stopping.

The unit (``systemd/dishtracker.service``) is ``Type=notify`` with a
watchdog: systemd considers the daemon started only after ``READY=1`` and
kills and restarts it when ``WATCHDOG=1`` stops arriving. The pipeline sends
``WATCHDOG=1`` only while frames really move through the stages
(:meth:`Notifier.run_watchdog`), so a wedged decoder or detector — with the
event loop still happily answering HTTP — is restarted too.

The protocol is one datagram of ``KEY=value`` lines to the ``AF_UNIX``
socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace). Without that variable (a terminal, a test) every call is a
no-op, so the daemon needs no special case.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

_log = structlog.get_logger("edge.systemd")

STATUS_INTERVAL_S = 10.0
"""How often ``STATUS=`` is refreshed when no watchdog interval is set."""


class Notifier:
    """Sends sd_notify messages to the service manager.

    Parameters
    ----------
    address
        The notify socket: a filesystem path, or ``@name`` for the abstract
        namespace. Default: ``$NOTIFY_SOCKET``; unset or empty disables.
    environ
        Where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are
        read (default ``os.environ``).
    """

    def __init__(self, address: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ
        addr = self._env.get("NOTIFY_SOCKET", "") if address is None else address
        self._address: str | bytes | None = None
        if addr.startswith("@"):
            self._address = b"\0" + addr[1:].encode()
        elif addr.startswith("/"):
            self._address = addr
        elif addr:
            # e.g. vsock:… (systemd >= 253, VMs): not used on an edge box
            _log.warning("notify_socket_unsupported", address=addr)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram.

        Returns
        -------
        bool
            True when sent; False when disabled or the send failed (logged
            once: a missing service manager must never stop the daemon).
        """
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as err:
            if not self._failed:
                _log.warning("sd_notify_failed", error=str(err))
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (model loaded, server listening)."""
        return self.notify("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the daemon is alive and making progress."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: start-up or shutdown needs ``seconds`` more.

        For a long step before ``READY=1``, e.g. building a TensorRT engine
        on a Jetson, which can outlast ``TimeoutStartSec``. Send it again
        before the extension runs out.
        """
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (sent last in the shutdown order)."""
        return self.notify("STOPPING=1", *([_status(status)] if status else []))

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``.

        ``None`` when the watchdog is off: no ``WATCHDOG_USEC``, or a
        ``WATCHDOG_PID`` naming another process (as ``sd_watchdog_enabled``).
        """
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 2e6

    async def run_watchdog(self, progress: Callable[[], bool], *,
                           summary: Callable[[], str] | None = None,
                           interval: float | None = None) -> None:
        """Ping the watchdog while the pipeline advances; runs until cancelled.

        Parameters
        ----------
        progress
            Called once per interval; True when the stages advanced since the
            previous call (frame counters moved, or nothing is expected to
            move, e.g. every source is down and reconnecting). While it
            returns False no ``WATCHDOG=1`` is sent, and systemd restarts the
            daemon after ``WatchdogSec``.
        summary
            Short status line (e.g. ``"3 streams, 20.0 fps, 2 viewers"``),
            sent as ``STATUS=`` when it changes.
        interval
            Seconds between checks; default :meth:`watchdog_interval`, or
            :data:`STATUS_INTERVAL_S` when the watchdog is off.
        """
        period = interval or self.watchdog_interval() or STATUS_INTERVAL_S
        last_status = ""
        last_progress = time.monotonic()
        stalled = False
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if progress():
                last_progress = now
                if stalled:
                    _log.info("pipeline_progress_resumed")
                    stalled = False
                self.watchdog()
                text = summary() if summary is not None else ""
            else:
                if not stalled:
                    _log.warning("pipeline_stalled_watchdog_withheld")
                    stalled = True
                text = f"stalled: no progress for {now - last_progress:.0f} s"
            if text and text != last_status:
                self.status(text)
                last_status = text

    def close(self) -> None:
        """Close the socket (later calls reopen it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())
