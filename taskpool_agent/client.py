"""HTTP to the pool: JSON in and out, retries with jittered exponential backoff.

Network errors (an answer cut short or garbled included), 5xx and 429 are
retried (a write with the same ``Idempotency-Key``, so the server stores it
once); any other 4xx is final, 409 included: the server has decided and
asking again cannot change it.
Only the standard library: ``urllib``.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.client
import json
import logging
import math
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from taskpool_agent import __version__
from taskpool_agent.clock import ServerClock

log = logging.getLogger("taskpool_agent")

USER_AGENT = f"taskpool-agent/{__version__}"
#: Seconds the last try gets once the agent is stopping (systemd's unit waits 15 s in all,
#: the handler's kill grace included).
STOPPING_TIMEOUT = 5.0
T = TypeVar("T")


class Stopped(Exception):
    """The agent was asked to stop while it waited."""


class Refused(Exception):
    """A final 4xx answer: the server refused the request and will refuse it again."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Unreachable(Exception):
    """The server did not answer usefully within the time a call was given."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    data: Any


@dataclass
class Backoff:
    """Delays between retries: doubling from ``first`` up to ``most``, each jittered.

    The jitter ("equal jitter": a delay between half and all of the step) keeps
    a fleet that lost its server together from coming back in lockstep.
    """

    first: float = 1.0
    most: float = 60.0

    def delay(self, failures: int) -> float:
        step = min(self.most, self.first * 2 ** min(failures, 30))
        return random.uniform(step / 2, step)


@dataclass
class PoolClient:
    """Calls to one server as one device (or as nobody, for enrollment)."""

    base_url: str
    token: str = ""
    backoff: Backoff = field(default_factory=Backoff)
    stop: threading.Event = field(default_factory=threading.Event)
    #: The server's time, as its answers' ``Date`` says it.
    server_clock: ServerClock = field(default_factory=ServerClock, repr=False)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float = 30.0,
        retry_for: float | None = None,
        expect: Callable[[Any], bool] | None = None,
        about: str = "",
        page_refuses: frozenset[int] = frozenset(),
    ) -> Answer:
        """One request, retried on network errors, 5xx and 429 for ``retry_for`` seconds
        (``None``: until it succeeds or the agent stops). A success whose JSON ``expect``
        says is not the pool's answer (a proxy's, a portal's) is retried as well, and so
        are a redirect and a 4xx that is not the pool's refusal (a proxy's error page),
        unless ``page_refuses`` holds its status: then it is ``Refused`` like the pool's.
        ``about`` names what the request is for (a task's attempt) in the log.

        Once the agent is stopping, a try (one already under way included) is given up
        ``STOPPING_TIMEOUT`` seconds after the stop: ``Stopped``.
        """
        request_headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.token:
            request_headers["Authorization"] = f"Bearer {self.token}"
        if idempotency_key:
            request_headers["Idempotency-Key"] = idempotency_key
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request_headers["Content-Type"] = "application/json"
        request_headers.update(headers or {})
        url = self.base_url + path
        give_up = None if retry_for is None else time.monotonic() + retry_for
        failures = 0
        while True:  # one try even once stopping: the answer to a handler stopped on SIGTERM
            try:
                answer = interruptible(
                    lambda: self._once(method, url, data, request_headers, timeout, page_refuses),
                    self.stop,
                    grace=STOPPING_TIMEOUT,  # a service manager waits only so long
                )
                if expect is not None and not expect(answer.data):
                    raise _Retryable(f"{answer.status} with an answer that is not the pool's")
                return answer
            except _Retryable as error:
                delay = error.retry_after or self.backoff.delay(failures)
                failures += 1
                if give_up is not None and time.monotonic() + delay > give_up:
                    raise Unreachable(f"{method} {path}: {error}") from None
                said = str(error).rstrip(".")  # the server's sentence, then ours
                log.warning(
                    "%s%s %s: %s; again in %.1f s",
                    f"{about}: " if about else "",
                    method,
                    path,
                    said,
                    delay,
                )
                if self.stop.wait(delay):
                    raise Stopped from None

    def events(self, path: str, *, read_timeout: float = 20.0) -> Iterator[tuple[str, Any]]:
        """The events of a Server-Sent Events stream as ``(event, data)``, one try.

        A comment (the server's keep-alive, its ``stream open``) comes as
        ``("", None)``, so that a reader can look up between events. The stream
        ends when the server ends it; a network error or a refusal raises
        (``OSError``, ``urllib.error.URLError``), and so does ``read_timeout``
        seconds of silence (the server sends a keep-alive every 15 s).
        """
        headers = {"Accept": "text/event-stream", "User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base_url + path, headers=headers)
        with Deadline(read_timeout) as deadline:
            try:
                with deadline.opener().open(request, timeout=read_timeout) as response:
                    name, data = "", None
                    for raw in response:
                        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                        if not line:
                            if data is not None:
                                deadline.pause()  # the reader's time is not the server's
                                yield name, data
                                deadline.start(read_timeout)
                            name, data = "", None
                        elif line.startswith(":"):
                            deadline.pause()
                            yield "", None
                            deadline.start(read_timeout)
                        else:
                            field, _, value = line.partition(":")
                            value = value[1:] if value.startswith(" ") else value
                            if field == "event":
                                name = value
                            elif field == "data":
                                data = json.loads(value)
            except (OSError, http.client.HTTPException):
                if deadline.expired:
                    raise TimeoutError(f"no whole event in {read_timeout:g} s") from None
                raise
            if deadline.expired:  # the stream was shut, not ended by the server
                raise TimeoutError(f"no whole event in {read_timeout:g} s")

    def _once(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: float,
        page_refuses: frozenset[int],
    ) -> Answer:
        """One try, given ``timeout`` seconds in all: a socket's timeout counts each read on
        its own, and an answer that trickles in (a byte a second) would never time out."""
        with Deadline(timeout) as deadline:
            try:
                answer = self._try(
                    deadline.opener(), method, url, data, headers, timeout, page_refuses
                )
            except (_Retryable, Refused):
                if deadline.expired:
                    raise _Retryable(f"timed out (no whole answer in {timeout:g} s)") from None
                raise
            if deadline.expired:  # an answer without a length, cut where it was shut
                raise _Retryable(f"timed out (no whole answer in {timeout:g} s)")
            return answer

    def _try(
        self,
        opener: urllib.request.OpenerDirector,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: float,
        page_refuses: frozenset[int],
    ) -> Answer:
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with opener.open(request, timeout=timeout) as response:
                self.server_clock.heard(response.headers.get("Date"))
                raw = response.read()
                if not raw and response.status in (200, 201, 202):
                    # Every such answer of the pool has a body: this one was cut inside
                    # its headers, which http.client reads as a 200 with nothing after.
                    raise _Retryable(f"{response.status} with an empty body")
                return Answer(response.status, dict(response.headers), _json(raw))
        except urllib.error.HTTPError as error:
            self.server_clock.heard(error.headers.get("Date") if error.headers else None)
            try:
                raw = error.read()
            except (OSError, http.client.HTTPException):
                # The refusal itself was cut short on the way: what it said is unknown.
                raise _Retryable(f"{error.code}, its body cut short") from None
            detail = _detail(raw, error.code) or error.reason
            if error.code < 400:  # not followed: urllib would send a POST on as a GET
                where = error.headers.get("Location") if error.headers else None
                detail = (
                    f"the server redirects{f' to {where}' if where else ''}: set the config's "
                    "server to the pool's URL there"
                )
                if error.code in page_refuses:
                    raise Refused(error.code, detail) from None
                raise _Retryable(f"{error.code}: {detail}") from None
            if error.code >= 500 or error.code == 429:
                said = f"{error.code} {detail}"
                if str(detail).split()[:1] == [str(error.code)]:  # a page that says its status
                    said = str(detail)
                raise _Retryable(said, retry_after(error.headers)) from None
            if _a_pool_refusal(raw):
                raise Refused(error.code, str(detail)) from None
            if error.code in page_refuses:  # a page: what answered is not the pool
                if not str(detail).startswith(NOT_THE_POOL):
                    detail = f"{NOT_THE_POOL}: {detail}"
                raise Refused(error.code, str(detail)) from None
            # A proxy's page (its 404 while the site is down for work, its own 401): not
            # the pool's word on the request, which is asked again.
            said = f"{error.code} {detail}"
            if not str(detail).startswith(NOT_THE_POOL):
                said += f" ({NOT_THE_POOLS_ANSWER})"
            raise _Retryable(said) from None
        except ValueError:
            # Not the pool's answer: a proxy's or a captive portal's page, or a server URL
            # that names the site rather than its pool.
            raise _Retryable(
                "the answer is not JSON (is the config's server the pool's URL, ending in /pool/?)"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            # HTTPException: an answer cut short or garbled on the way (IncompleteRead,
            # BadStatusLine).
            reason = getattr(error, "reason", error)
            said = str(reason) or type(error).__name__
            raise _Retryable(said + clock_hint(reason)) from None


#: OpenSSL's verify codes for a certificate not yet valid, and for one expired.
CERTIFICATE_NOT_YET_VALID, CERTIFICATE_EXPIRED = 9, 10


def clock_hint(reason: object) -> str:
    """What to add to a TLS error that may be the device's clock's, not the certificate's.

    A device without a real-time clock (a Raspberry Pi) boots with 1970, or with the
    time it saved at its last shutdown, until NTP sets it: the server's certificate
    looks not valid yet (or expired) meanwhile. The agent tries again; this says why.
    """
    if isinstance(reason, ssl.SSLCertVerificationError) and reason.verify_code in (
        CERTIFICATE_NOT_YET_VALID,
        CERTIFICATE_EXPIRED,
    ):
        now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return f" (the device's clock says {now}: is it set? NTP may not have set it yet)"
    return ""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _json(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


def _a_pool_refusal(raw: bytes) -> bool:
    """Whether a 4xx's body is the pool's refusal: a JSON object whose ``detail`` is text."""
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("detail"), str)


#: What a 404 that is not the pool's own says: the server URL names something else.
NOT_THE_POOL = "not the pool (the server must be the pool's URL, such as https://host/pool/)"
#: What is added to another refusal that is not the pool's (a proxy's page).
NOT_THE_POOLS_ANSWER = "not the pool's answer: is the config's server the pool's URL?"


def _detail(raw: bytes, status: int | None = None) -> str:
    """The pool's ``detail``, or the text of a page that is not the pool's, on one line."""
    try:
        return str(json.loads(raw).get("detail", ""))
    except (ValueError, AttributeError):
        pass
    # A proxy's page, or the site's own where the URL misses the pool: its words, not its tags,
    # and its title only when the page does not say it again (nginx's does, in an <h1>).
    page = raw[:4000]
    untitled = _words(_TITLE.sub(b" ", page))
    for title in _TITLE.finditer(page):
        if _words(title.group(1)) in untitled:
            page = page.replace(title.group(0), b" ", 1)
    text = _words(page)[:160]
    if status == 404:
        return f"{NOT_THE_POOL}: {text}" if text else NOT_THE_POOL
    return text


def _words(page: bytes) -> str:
    """A page's words on one line."""
    return " ".join(html.unescape(_TAG.sub(b" ", page).decode(errors="replace")).split())


#: A page's title, with its text.
_TITLE = re.compile(rb"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)

#: A tag, or a style sheet or script with its contents: a page's words are what is left.
_TAG = re.compile(
    rb"<(style|script)\b.*?(?:</\1\s*>|$)|<!--.*?(?:-->|$)|<[^>]*>", re.IGNORECASE | re.DOTALL
)


#: The least and most ``Retry-After`` obeyed, in seconds: a server (or a proxy) saying 0 or
#: 0.001 must not make a fleet hammer it, nor one saying a day make it give up on it.
RETRY_AFTER_RANGE = (1.0, 300.0)


def retry_after(headers: Any) -> float | None:
    """The answer's ``Retry-After`` in seconds, within ``RETRY_AFTER_RANGE``; ``None`` (the
    backoff's own delay) for none, a date, or one that is not a number of seconds."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    if not seconds >= 0 or math.isinf(seconds):  # NaN, negative, infinite
        return None
    least, most = RETRY_AFTER_RANGE
    return min(max(seconds, least), most)


class Deadline:
    """Shuts the connections of one request when its time is up, headers and body alike.

    Started on entry; ``pause()`` and ``start()`` let a stream give each event
    its time. ``expired`` tells a request that failed, or ended early, why.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        self.start(self.seconds)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pause()

    def start(self, seconds: float) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            timer = threading.Timer(seconds, lambda: self._expire(timer))
            timer.daemon = True
            self.timer = timer
            timer.start()

    def pause(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def opener(self) -> urllib.request.OpenerDirector:
        """``urlopen``'s opener (proxies from the environment included), whose connections
        this deadline watches."""
        return urllib.request.build_opener(_WatchedHTTP(self), _WatchedHTTPS(self), _NoRedirects())

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self, timer: threading.Timer) -> None:
        with self.lock:
            if self.timer is not timer:  # paused, or started again, meanwhile
                return
            self.expired = True
            sockets = list(self.sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Ends a blocked read on ``sock`` (at once, from another thread), TLS or not."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@functools.cache
def _watched_connection(http_class: type) -> type:
    class Watched(http_class):
        deadline: Deadline | None = None

        def connect(self) -> None:
            super().connect()
            if self.deadline is not None:
                self.deadline.watch(self.sock)

    return Watched


class _Watching:
    """A handler whose connections a ``Deadline`` watches."""

    def __init__(self, deadline: Deadline, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        watched = _watched_connection(http_class)

        def connection(*args: Any, **kw: Any) -> Any:
            made = watched(*args, **kw)
            made.deadline = self.deadline
            return made

        return super().do_open(connection, req, **kwargs)  # type: ignore[misc]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib sends a POST on as a GET, and an answer the agent
    took for sent would be lost. A 3xx comes back as it is, to be said and asked again."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _WatchedHTTP(_Watching, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_Watching, urllib.request.HTTPSHandler):
    pass


def interruptible(
    call: Callable[[], T], stop: threading.Event, *, tick: float = 0.2, grace: float = 0.0
) -> T:
    """``call()`` in a thread of its own, given up (``Stopped``) ``grace`` seconds after
    ``stop`` is set (at once by default).

    A blocked read cannot be interrupted, but it need not be waited for (the
    thread is a daemon, and its answer is dropped): the long-poll gives up at
    once, a write is given its grace.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error
        done.set()

    threading.Thread(target=run, name="taskpool-agent-call", daemon=True).start()
    stopped_at: float | None = None
    while not done.wait(tick):
        if stop.is_set():
            stopped_at = time.monotonic() if stopped_at is None else stopped_at
            if time.monotonic() - stopped_at >= grace:
                raise Stopped
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
