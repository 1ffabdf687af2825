"""The ``trio-tlsretry`` command: ``demo``, ``serve`` and ``connect``."""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import ipaddress
import math
import os
import re
import signal
import socket
import ssl
import sys
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from . import __version__
from ._listener import DEFAULT_MAX_HANDSHAKES, GracefulStop, TLSListener
from ._stream import TLSStream
from ._tcp import open_tls_over_tcp_stream, serve_tls_over_tcp

__all__ = ["main"]

PROG = "trio-tlsretry"
_CHUNK = 64 * 1024
#: Exit status after Ctrl-C: 128 + SIGINT, as shells report a process killed by it.
EXIT_INTERRUPTED = 130
#: Seconds ``serve`` gives open connections after the first SIGINT or SIGTERM.
DEFAULT_SERVE_GRACE = 10.0
#: Seconds a stream gets to send its close_notify once the command is stopping.
_CLOSE_TIMEOUT = 2.0

_T = TypeVar("_T")


class CLIError(Exception):
    """A problem reported as one line on stderr, with exit status 1."""


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups; ``[exc]`` for a plain one."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        inner: tuple[BaseException, ...] | None = getattr(current, "exceptions", None)
        if inner is None:
            leaves.append(current)
        else:
            pending.extend(inner)
    return leaves


def _single_leaf(exc: BaseException) -> BaseException:
    """The one exception inside (possibly nested) exception groups, else ``exc``."""
    leaves = _leaves(exc)
    return leaves[0] if len(leaves) == 1 else exc


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- helpers


def _fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _describe_tls_failure(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {cause.verify_message}"
    if isinstance(cause, ssl.CertificateError):
        return f"certificate verification failed: {cause}"
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    return str(cause)


class _AlertLog:
    """Which TLS alert each connection sent or received, for the server's log.

    Python's ``ssl`` module reports alerts only through the context's message
    callback (``SSLContext._msg_callback``, undocumented but present since
    Python 3.8); the CLI owns its context, so it may install one. Alerts are
    kept per ``SSLObject``, weakly, so a closed connection costs nothing.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._last: weakref.WeakKeyDictionary[object, tuple[str, int]] = weakref.WeakKeyDictionary()
        self.attach(context)

    def attach(self, context: ssl.SSLContext) -> None:
        """Record the alerts of connections made with ``context`` too (a reloaded one)."""
        context._msg_callback = self._record  # type: ignore[attr-defined]

    def _record(
        self,
        connection: object,
        direction: str,
        version: object,
        content_type: object,
        message_type: object,
        data: bytes,
    ) -> None:
        # A fatal alert (level 2) is the reason a connection ended; a warning
        # (close_notify) must not hide one that came before it.
        if (
            content_type == _ALERT_CONTENT_TYPE
            and len(data) == 2
            and (data[0] == 2 or connection not in self._last)
        ):
            self._last[connection] = (direction, data[1])

    def describe(self, stream: TLSStream[Any]) -> str | None:
        """``"sent alert bad_record_mac"`` or similar; ``None`` if no alert."""
        # The SSLObject is private to TLSStream; this module is part of the package.
        found = self._last.get(stream._ssl_object)
        if found is None:
            return None
        direction, code = found
        try:
            name = ssl._TLSAlertType(code).name.lower()  # type: ignore[attr-defined]
        except ValueError:
            name = f"alert {code}"
        return f"{'sent' if direction == 'write' else 'received'} alert {name}"


#: TLS record content type of an alert (RFC 8446 section 5.1).
_ALERT_CONTENT_TYPE = 21


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        # getaddrinfo's codes are not errno values: os.strerror(-2) is
        # "Unknown error -2", the resolver's own text says what happened.
        return exc.strerror or str(exc)
    # trio.open_tcp_stream raises one OSError whose cause groups the
    # per-address failures; the first one says what happened.
    for inner in getattr(exc.__cause__, "exceptions", ()):
        if isinstance(inner, OSError) and inner.errno:
            return os.strerror(inner.errno)
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


def _check_port(port: int, lowest: int) -> int:
    """``port`` if it is a TCP port number from ``lowest`` up, else a :class:`CLIError`."""
    if not lowest <= port <= 65535:
        raise CLIError(f"port out of range: {port} (must be {lowest} to 65535)")
    return port


def _split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CLIError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, _check_port(int(port), lowest=1)


def _unresolved(host: str, exc: socket.gaierror) -> CLIError:
    return CLIError(f"cannot resolve host name {host}: {_describe_os_error(exc)}")


async def _close_politely(stream: TLSStream[Any]) -> None:
    """Close ``stream`` with ``close_notify``, even while the caller is being cancelled.

    :meth:`TLSStream.aclose` in a cancelled scope drops the connection
    without a word; after Ctrl-C the peer should still see an orderly close,
    so the close runs shielded, for at most ``_CLOSE_TIMEOUT`` seconds.
    """
    with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
        try:
            await stream.aclose()
        except trio.BrokenResourceError:
            # A handshake that aclose ran and that failed: the stream is
            # closed all the same, and there is nobody to report it to.
            pass


async def _run_until_sigint(async_fn: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``async_fn()``; the first Ctrl-C cancels it and raises ``KeyboardInterrupt``.

    Trio's own Ctrl-C handling raises ``KeyboardInterrupt`` at whatever
    line is running, which may be half-way through a TLS stream's
    bookkeeping. Receiving SIGINT as a signal instead turns it into a
    cancellation at a checkpoint, after which every stream can still close
    cleanly. Once the signal has arrived the receiver is gone, so a second
    Ctrl-C gets trio's immediate handling.
    """
    interrupted = False

    async def watch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                break
        interrupted = True
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch)
        result = await async_fn()
        nursery.cancel_scope.cancel()
    if interrupted:
        raise KeyboardInterrupt
    return result


def _format_address(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _self_signed_certificate(host: str | None) -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and key, as PEM, valid for localhost."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise CLIError(
            "no --cert/--key given and the 'cryptography' package is not installed to make a "
            "throw-away certificate: pip install 'trio-tlsretry[testing]'"
        ) from None
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                names.append(x509.DNSName(host))
        else:
            if not address.is_loopback:
                names.append(x509.IPAddress(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trio-tlsretry throw-away")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
#: PKCS #8 labels ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", RFC 7468 sections
#: 10 and 11) and OpenSSL's older per-algorithm ones ("RSA PRIVATE KEY").
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


def _read_pem_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"cannot load {what} {path!r}: {exc.strerror or exc}") from None


def _ssl_error_text(exc: ssl.SSLError) -> str:
    """OpenSSL's own words, without the ``[LIB: REASON]`` and ``(_ssl.c:N)`` decoration."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "the private key does not belong to the certificate"
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    text = re.sub(r"^\[[^]]*\]\s*", "", re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text))
    # "PEM lib" is all OpenSSL says when a PEM block does not decode.
    return "not valid PEM" if text == "PEM lib" else text


def _load_given_certificate(context: ssl.SSLContext, cert: str, key: str | None) -> bytes:
    """Load ``--cert``/``--key`` into ``context``; return the certificate file's bytes.

    The files are checked for PEM blocks first: for a file that holds none,
    OpenSSL says only "PEM lib".
    """
    cert_pem = _read_pem_file(cert, "certificate")
    if _PEM_CERTIFICATE not in cert_pem:
        raise CLIError(f"cannot load certificate {cert!r}: the file holds no PEM certificate")
    if key is None:
        if not _PEM_PRIVATE_KEY.search(cert_pem):
            raise CLIError(
                f"cannot load certificate {cert!r}: the file holds no PEM private key "
                "(give the key file with --key)"
            )
    elif not _PEM_PRIVATE_KEY.search(_read_pem_file(key, "key")):
        raise CLIError(f"cannot load key {key!r}: the file holds no PEM private key")
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        files = f"certificate {cert!r}" + (f" / key {key!r}" if key else "")
        raise CLIError(f"cannot load {files}: {_ssl_error_text(exc)}") from None
    return cert_pem


def _write_private_file(path: str, data: bytes) -> None:
    """Create ``path``, readable and writable by its owner only, and write ``data``.

    The mode is given to ``open(2)`` itself, so the file is never readable by
    others, not even for a moment, whatever the umask; ``O_EXCL`` refuses a
    file (or a planted symbolic link) that is already there.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _load_throwaway_certificate(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load an in-memory certificate and key: ``load_cert_chain`` only reads files."""
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        _write_private_file(cert_path, cert_pem)
        _write_private_file(key_path, key_pem)
        context.load_cert_chain(cert_path, key_path)


def _server_context(args: argparse.Namespace) -> tuple[ssl.SSLContext, str]:
    """The server context and the SHA-256 fingerprint of its certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if args.cert:
        cert_bytes = _load_given_certificate(context, args.cert, args.key)
    else:
        cert_bytes, key_bytes = _self_signed_certificate(args.host)
        _load_throwaway_certificate(context, cert_bytes, key_bytes)
    cert_pem = cert_bytes.decode("ascii", "replace")
    try:
        der = ssl.PEM_cert_to_DER_cert(cert_pem[cert_pem.index("-----BEGIN CERTIFICATE-----") :])
    except ValueError:
        fingerprint = "(unknown)"
    else:
        fingerprint = _fingerprint(der)
    return context, fingerprint


# ------------------------------------------------------------------ demo


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        import trustme  # noqa: F401
    except ImportError:
        _err("the demo needs trustme: pip install 'trio-tlsretry[testing]'")
        return 1
    from ._demo import DemoError, run_demo

    def out(line: str) -> None:
        print(line, flush=True)

    print(f"{PROG} {__version__} demo: a timed-out send_all retried on the same TLSStream")
    try:
        trio.run(lambda: run_demo(size=args.size, send_timeout=args.timeout, out=out))
    except DemoError as exc:
        _err(f"demo failed: {exc}")
        return 1
    except (trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
        _err(f"demo failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


# ----------------------------------------------------------------- serve


_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
_FORCED_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def _reload_certificate(
    args: argparse.Namespace,
    listeners: Sequence[TLSListener[trio.SocketStream]],
    alerts: _AlertLog,
) -> None:
    """SIGHUP: load ``--cert``/``--key`` again into a new context and swap it in.

    New handshakes use the new certificate; open connections keep theirs.
    A file that fails to load leaves the old certificate in place.
    """
    if not args.cert:
        _err("SIGHUP: nothing to reload (no --cert given); keeping the throw-away certificate")
        return
    try:
        context, fingerprint = _server_context(args)
    except CLIError as exc:
        _err(f"SIGHUP: {exc}; keeping the old certificate")
        return
    alerts.attach(context)
    for listener in listeners:
        listener.ssl_context = context
    _err(f"SIGHUP: reloaded certificate {args.cert!r}, SHA-256 fingerprint {fingerprint}")


async def _serve(args: argparse.Namespace, context: ssl.SSLContext, fingerprint: str) -> int:
    """Serve until a graceful stop ends (0) or a second signal cuts it short (128 + signal)."""
    mode = "discard" if args.discard else "echo"
    counter = 0
    alerts = _AlertLog(context)
    stop = GracefulStop(close_timeout=_CLOSE_TIMEOUT)
    forced_by: int | None = None

    async def handler(stream: TLSStream[trio.SocketStream]) -> None:
        nonlocal counter
        counter += 1
        number = counter
        try:
            peer = _format_address(stream.transport_stream.socket.getpeername())
        except (AttributeError, OSError):
            peer = "?"
        received = 0
        # Unless the loop below ends by itself, the server is stopping.
        note = "closed (server stopping)"
        try:
            cipher = stream.cipher()
            print(
                f"[{number}] {peer}: {stream.version()} {cipher[0] if cipher else '?'}",
                file=sys.stderr,
                flush=True,
            )
            while True:
                data = await stream.receive_some()
                if not data:
                    break
                received += len(data)
                if mode == "echo":
                    await stream.send_all(data)
            note = "closed"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            alert = alerts.describe(stream)
            note = f"closed: {alert}" if alert else f"broken ({exc})"
        finally:
            await _close_politely(stream)
            print(f"[{number}] {peer}: {received} bytes, {note}", file=sys.stderr, flush=True)

    async def announce_stop(signum: int) -> None:
        await stop.wait_accepting_stopped()
        open_now = stop.open_connections
        grace = "as long as they need" if math.isinf(args.grace) else f"up to {args.grace:g} s"
        _err(
            f"{_SIGNAL_NAMES[signal.Signals(signum)]}: stopping: no new connections; "
            f"{open_now} open, given {grace} to finish (SIGINT or SIGTERM again: stop at once)"
        )

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def run_server(
                task_status: trio.TaskStatus[list[TLSListener[trio.SocketStream]]],
            ) -> None:
                await serve_tls_over_tcp(
                    handler,
                    args.port,
                    context,
                    host=args.host,
                    handshake_timeout=args.handshake_timeout,
                    max_handshakes=args.max_handshakes or None,
                    prompt_session_tickets=args.prompt_session_tickets,
                    graceful_stop=stop,
                    task_status=task_status,
                )
                # Stopped gracefully: every connection has ended.
                nursery.cancel_scope.cancel()

            listeners: list[TLSListener[trio.SocketStream]] = await nursery.start(run_server)
            for listener in listeners:
                sock = listener.transport_listener.socket  # type: ignore[attr-defined]
                print(f"listening on {_format_address(sock.getsockname())} ({mode})", flush=True)
            print(f"certificate SHA-256 fingerprint {fingerprint}", flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    _reload_certificate(args, listeners, alerts)
                elif not stop.stop_requested:
                    stop.stop(args.grace)
                    nursery.start_soon(announce_stop, signum)
                else:
                    forced_by = signum
                    nursery.cancel_scope.cancel()
                    break
    if forced_by is not None:
        _err(_FORCED_WORDS[signal.Signals(forced_by)])
        return 128 + forced_by
    _err("stopped")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    _check_port(args.port, lowest=0)
    if args.key and not args.cert:
        raise CLIError("--key needs --cert")
    if args.max_handshakes < 0:
        raise CLIError(f"--max-handshakes must be 0 (no limit) or more, not {args.max_handshakes}")
    if math.isnan(args.grace) or args.grace < 0:
        raise CLIError(f"--grace must be 0 or more seconds, not {args.grace:g}")
    context, fingerprint = _server_context(args)
    try:
        return trio.run(_serve, args, context, fingerprint)
    except Exception as exc:
        leaf = _single_leaf(exc)
        if isinstance(leaf, socket.gaierror):
            raise _unresolved(args.host, leaf) from None
        if isinstance(leaf, OSError):
            where = f"{args.host} port" if args.host else "port"
            reason = _describe_os_error(leaf)
            raise CLIError(f"cannot listen on {where} {args.port}: {reason}") from None
        raise


# --------------------------------------------------------------- connect


def _write_stdout(data: bytes) -> None:
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def _peer_subject(stream: TLSStream[Any]) -> str:
    cert = stream.getpeercert()
    if cert:
        parts = [f"{key}={value}" for rdn in cert.get("subject", ()) for key, value in rdn]
        return ", ".join(parts) or "(empty subject)"
    der = stream.getpeercert(binary_form=True)
    if not der:
        return "(no certificate)"
    try:
        from cryptography import x509
    except ImportError:
        return f"(not verified) SHA-256 {_fingerprint(der)}"
    return f"{x509.load_der_x509_certificate(der).subject.rfc4514_string()} (not verified)"


async def _connect(args: argparse.Namespace, context: ssl.SSLContext) -> int:
    host, port = _split_host_port(args.address)
    try:
        stream = await open_tls_over_tcp_stream(host, port, ssl_context=context)
    except socket.gaierror as exc:
        raise _unresolved(host, exc) from None
    except OSError as exc:
        raise CLIError(f"cannot connect to {args.address}: {_describe_os_error(exc)}") from None
    sent = received = 0
    started = time.monotonic()
    outcome = "the server closed the connection (close_notify)"
    try:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            raise CLIError(
                f"TLS handshake with {args.address} failed: {_describe_tls_failure(exc)}"
            ) from None
        cipher = stream.cipher()
        info = [
            f"connected to {args.address}",
            f"  protocol  {stream.version()}",
            f"  cipher    {cipher[0] if cipher else '?'}",
            f"  alpn      {stream.selected_alpn_protocol() or '(none)'}",
            f"  subject   {_peer_subject(stream)}",
        ]
        print("\n".join(info), file=sys.stderr, flush=True)

        async def pump_stdin() -> None:
            nonlocal sent
            while True:
                data = await trio.to_thread.run_sync(os.read, 0, _CHUNK, abandon_on_cancel=True)
                if not data:
                    break
                await stream.send_all(data)
                sent += len(data)
            await stream.send_eof()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump_stdin)
                while True:
                    data = await stream.receive_some()
                    if not data:
                        break
                    received += len(data)
                    await trio.to_thread.run_sync(_write_stdout, bytes(data))
                nursery.cancel_scope.cancel()
        except Exception as exc:
            leaf = _single_leaf(exc)
            if isinstance(leaf, (trio.BrokenResourceError, OSError)):
                raise CLIError(f"connection to {args.address} failed: {leaf}") from None
            raise
    finally:
        await _close_politely(stream)
    elapsed = time.monotonic() - started
    print(
        f"sent {sent} bytes, received {received} bytes in {elapsed:.2f} s; {outcome}",
        file=sys.stderr,
        flush=True,
    )
    return 0


def _client_context(args: argparse.Namespace) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CLIError(f"cannot load CA file {args.cafile!r}: {reason}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.alpn:
        context.set_alpn_protocols(args.alpn)
    return context


def _cmd_connect(args: argparse.Namespace) -> int:
    _split_host_port(args.address)
    context = _client_context(args)
    return trio.run(_run_until_sigint, functools.partial(_connect, args, context))


# ------------------------------------------------------------------ main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="A cancellation-safe TLS stream for Trio: demo and tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="show a timed-out send_all being retried on the same stream")
    demo.add_argument(
        "--size", type=int, default=32 * 1024 * 1024, help="message size in bytes (32 MiB)"
    )
    demo.add_argument(
        "--timeout", type=float, default=0.5, help="seconds before send_all is cancelled"
    )
    demo.set_defaults(run=_cmd_demo)

    serve = sub.add_parser("serve", help="run a TLS echo (or discard) server")
    serve.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    serve.add_argument("--host", default=None, help="address to bind (default: all)")
    serve.add_argument("--cert", help="certificate chain, PEM (default: a throw-away one)")
    serve.add_argument("--key", help="private key, PEM (default: in the --cert file)")
    serve.add_argument(
        "--handshake-timeout", type=float, default=10.0, help="seconds per handshake (10)"
    )
    serve.add_argument(
        "--max-handshakes",
        type=int,
        default=DEFAULT_MAX_HANDSHAKES,
        metavar="N",
        help=f"handshakes in progress at once; more connections wait their turn "
        f"({DEFAULT_MAX_HANDSHAKES}; 0: no limit)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_SERVE_GRACE,
        metavar="SECONDS",
        help="after the first SIGINT or SIGTERM: stop accepting and give open connections "
        f"this long to finish ({DEFAULT_SERVE_GRACE:g}); a second signal stops at once",
    )
    serve.add_argument(
        "--prompt-session-tickets",
        action="store_true",
        help="send TLS 1.3 session tickets right after the handshake; safe only when clients "
        "read or drain before they close, else a client's close resets the connection and "
        "may lose the end of its upload (see docs/closing.rst)",
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="send every byte back (default)")
    mode.add_argument("--discard", action="store_true", help="read and drop every byte")
    serve.set_defaults(run=_cmd_serve)

    connect = sub.add_parser(
        "connect", help="connect to a TLS server and pipe stdin/stdout through it"
    )
    connect.add_argument(
        "address",
        metavar="HOST:PORT",
        help="the server to connect to; HOST is also the name its certificate is checked "
        "against and the SNI sent; IPv6 addresses in brackets: [::1]:8443",
    )
    trust = connect.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    connect.add_argument(
        "--alpn", action="append", metavar="PROTOCOL", help="offer this ALPN protocol (repeatable)"
    )
    connect.set_defaults(run=_cmd_connect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line tool; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except BaseException as exc:
        # Ctrl-C comes as a bare KeyboardInterrupt or, raised inside a trio
        # nursery, wrapped in a BaseExceptionGroup.
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(exc)):
            _err("interrupted")
            return EXIT_INTERRUPTED
        leaf = _single_leaf(exc)
        if isinstance(leaf, CLIError):
            _err(f"error: {leaf}")
            return 1
        raise
    return status
