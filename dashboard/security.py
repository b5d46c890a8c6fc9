"""HTTP hardening for the dashboard's Flask server: Host-header check and security headers.

The dashboard serves trace files and run names from the user's machine with no login, so it
must answer only to the names the user reaches it by. A page on another site can make its own
name resolve to 127.0.0.1 (DNS rebinding) and then read the dashboard as same-origin: the Host
header is the one thing that tells such a request apart, so any host not allowed gets a 400.
The headers keep the pages out of frames (clickjacking) and scripts to the app's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import flask

#: The loopback names every dashboard answers to, with any port.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Bind addresses that mean "every interface": no host name to allow from them.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

# The smallest policy the real app renders under in Chromium (the browser tests hold it there):
# Dash starts its renderer from an inline script, allowed by its hash and those of the
# clientside callbacks (``content_security_policy``), never by 'unsafe-inline'; plotly, the
# dropdowns and the grid set inline styles and inject <style> elements, hence 'unsafe-inline'
# for styles only; the grid's icons are data: SVG images. Neither Dash nor the grid's "function"
# formatters need 'unsafe-eval', nor does plotly's strict bundle, which the app serves from
# assets/vendor in place of plotly.min.js (whose WebGL traces, the Timeline's, compile code with
# new Function()). Everything else is the app's own, or nothing.
_POLICY = (
    ("default-src", "'self'"),
    ("script-src", "'self'"),
    ("style-src", "'self' 'unsafe-inline'"),
    ("img-src", "'self' data:"),
    ("object-src", "'none'"),
    ("base-uri", "'self'"),
    ("form-action", "'self'"),
    ("frame-ancestors", "'none'"),
)


def host_name(host: str) -> str:
    """The name part of a ``Host`` header or a host option: lower case, no port, no IPv6
    brackets, no trailing dot (``[::1]:8050`` -> ``::1``, ``Example.COM.:80`` -> ``example.com``).
    """
    value = host.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, colon, port = value.rpartition(":")
    if colon and ":" not in name and (port.isdigit() or not port):
        value = name
    return value.rstrip(".")


def allowed_host_names(hosts: Iterable[str]) -> frozenset[str]:
    """:data:`LOCAL_HOSTS` and ``hosts`` (each through :func:`host_name`)."""
    return LOCAL_HOSTS | {host_name(host) for host in hosts if host.strip()}


def content_security_policy(
    script_hashes: Iterable[str] = (), frame_ancestors: Iterable[str] = ()
) -> str:
    """The ``Content-Security-Policy`` header, allowing the inline scripts of these hashes
    and, when ``frame_ancestors`` names origins, frames in pages of those (else in none)."""
    hashes = " ".join(script_hashes)
    framers = " ".join(frame_ancestors)
    extra = {"script-src": hashes, "frame-ancestors": framers}
    parts = [
        f"{name} {framers}" if name == "frame-ancestors" and framers
        else f"{name} {value} {extra[name]}" if extra.get(name)
        else f"{name} {value}"
        for name, value in _POLICY
    ]  # fmt: skip
    return "; ".join(parts)


def harden(
    server: flask.Flask,
    allowed: frozenset[str],
    script_hashes: Callable[[], Iterable[str]],
    frame_ancestors: tuple[str, ...] = (),
) -> None:
    """Check every request's Host against ``allowed`` and add the security headers.

    Args:
        server: the Dash app's Flask server.
        allowed: host names (:func:`allowed_host_names`) requests may name, with any port.
        script_hashes: the CSP hashes of the app's inline scripts, asked for per response
            (Dash adds inline scripts up to the first request).
        frame_ancestors: CSP sources (``http://localhost:*``) whose pages may frame the app,
            as a notebook does (``profiler.show``); none by default: no page may.
    """

    def check_host() -> flask.Response | None:
        if host_name(flask.request.host) in allowed:
            return None
        return flask.Response(_refusal(flask.request.host, allowed), 400, mimetype="text/plain")

    def add_headers(response: flask.Response) -> flask.Response:
        if not frame_ancestors:  # the CSP's frame-ancestors says whom, to current browsers
            response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        policy = content_security_policy(script_hashes(), frame_ancestors)
        response.headers["Content-Security-Policy"] = policy
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # First of all before-request functions: Dash's own (its pages router) read runs on the
    # first request, which a refused host must not get as far as.
    server.before_request_funcs.setdefault(None, []).insert(0, check_host)
    server.after_request(add_headers)


def _refusal(host: str, allowed: frozenset[str]) -> str:
    names = ", ".join(sorted(f"[{n}]" if ":" in n else n for n in allowed))
    return (
        f"400 Bad Request: this dashboard does not answer to host {host!r} (a guard against "
        f"DNS rebinding). It answers to: {names}, with any port. To reach it by another name "
        "or address (say, when it is bound to 0.0.0.0), name each one you use: trainprof "
        "dashboard --allow-host NAME.\n"
    )
