"""Trace store roots in an object store (``s3://bucket/prefix``, ``memory://``...), through fsspec.

A root is a local path or an fsspec URL; ``file://`` URLs are local paths. fsspec (and s3fs for
``s3://``, ``pip install trainprof[s3]``) is imported only when a URL asks for it. Endpoint and
credentials come the standard way, from the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``...).

Writing (:mod:`profiler.store.upload`): a rank writes its run into a local staging directory
exactly as into a local root, and a background thread copies each file that changed to the same
name under the URL, whole.

Reading (:func:`local_copy`): one listing of the URL (each object's ETag, size and time), then
each object that is new or changed is downloaded into a local cache directory; the local readers
read that directory like any root, and the Parquet cache lands beside the copies, local. A
copy is refreshed at most every :data:`REFRESH_S` per process (the dashboard asks per request).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from profiler.store.scratch import partial_path

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: The environment variable naming where local copies of remote roots go.
CACHE_ENV = "TRAINPROF_CACHE_DIR"
#: A local copy younger than this is reused as it is.
REFRESH_S = 2.0
_STAMPS = ".trainprof-remote.json"  # hidden: no reader takes it for a run or a trace
_CACHE_DIR = "cache"  # meta/cache: the readers' Parquet cache, local only

#: The local copies made in this process: their directory -> the URL they copy.
_copies: dict[Path, str] = {}
_copied_at: dict[Path, float] = {}
_locks: dict[Path, threading.Lock] = {}
_locks_lock = threading.Lock()


class RemoteStoreError(OSError):
    """A URL that names no reachable store: no such bucket, bad credentials, no fsspec."""


def remote_url(root: str | os.PathLike[str]) -> str | None:
    """The URL, without a trailing ``/``, when ``root`` names an object store; None for a
    local path or a ``file://`` URL."""
    text = os.fspath(root)
    match = _URL.match(text) if isinstance(text, str) else None
    if match is None or match[1].lower() == "file":
        return None
    return text.rstrip("/")


def local_root(root: str | os.PathLike[str], *, empty_ok: bool = False) -> Path:
    """The local directory that reading ``root`` reads: a path as given, a ``file://`` URL's
    path, or the local copy of a remote URL, refreshed (:func:`local_copy`); a local copy
    made earlier in this process is refreshed too.

    Args:
        root: a path or a URL.
        empty_ok: a URL with nothing under it (in a bucket that exists) is an empty root.

    Raises:
        RemoteStoreError: the URL cannot be listed (or holds nothing, unless ``empty_ok``).
    """
    url = remote_url(root)
    if url is not None:
        return local_copy(url, empty_ok=empty_ok)
    path = local_path(root)
    source = _copies.get(path)
    return local_copy(source, empty_ok=empty_ok) if source is not None else path


def local_path(root: str | os.PathLike[str]) -> Path:
    """A local root as a path: ``file://`` URLs are their path (for a remote URL, see
    :func:`local_root`)."""
    text = os.fspath(root)
    if isinstance(text, str) and text[:7].lower() == "file://":
        return Path(text[7:])
    return Path(root)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it.

    Raises:
        RemoteStoreError: fsspec, or the scheme's package (s3fs), is not installed, or the
            URL is not one fsspec reads.
    """
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise RemoteStoreError(
            f"{url}: object store roots need fsspec (and s3fs for s3://): "
            "pip install 'trainprof[s3]'"
        ) from exc
    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise RemoteStoreError(f"{url}: {exc}; pip install 'trainprof[s3]'") from exc
    except (ValueError, TypeError) as exc:
        raise RemoteStoreError(f"{url}: not a URL fsspec can open ({exc})") from exc


def check_writable(url: str) -> None:
    """Make sure the bucket of ``url`` can be listed: it exists, the credentials work.

    Raises:
        RemoteStoreError: naming the URL and what is wrong.
    """
    fs, path = filesystem(url)
    if getattr(fs, "root_marker", "") != "":
        return  # no buckets (memory://): writing makes the directories
    try:
        fs.ls(path.split("/", 1)[0], detail=False)  # the bucket
    except FileNotFoundError:
        raise RemoteStoreError(f"{url}: no such bucket or location") from None
    except Exception as exc:  # botocore's and aiohttp's errors share no base class
        raise RemoteStoreError(f"{url}: cannot reach the store ({describe_error(exc)})") from exc


def remote_exists(url: str) -> bool:
    """Whether an object exists at ``url`` (False where that cannot be told)."""
    fs, path = filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception:  # unreachable: check_writable has said so already
        return False


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of an error from a store client, for one line."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# Reading --------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where local copies of remote roots go: ``$TRAINPROF_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/trainprof`` (``~/.cache/trainprof``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "trainprof"


def local_copy(url: str, *, max_age_s: float | None = None, empty_ok: bool = False) -> Path:
    """A local copy of everything under ``url``, each object downloaded when new or changed
    (its ETag, size or time), and files whose object is gone removed.

    Args:
        url: a remote root, run or trace file.
        max_age_s: reuse a copy refreshed this recently in this process (default
            :data:`REFRESH_S`).
        empty_ok: nothing under the URL (in a bucket that exists) is an empty copy.

    Returns:
        The local directory (or file, for a URL naming one object).

    Raises:
        RemoteStoreError: the URL cannot be listed, or names nothing (unless ``empty_ok``).
    """
    url = url.rstrip("/")
    slug = hashlib.blake2b(url.encode(), digest_size=8).hexdigest()
    target = (cache_root() / "remote" / f"{_safe(url)[:60]}-{slug}").resolve()
    with _lock(target):
        fresh = REFRESH_S if max_age_s is None else max_age_s
        if time.monotonic() - _copied_at.get(target, -1e9) < fresh:
            return _copy_path(target)
        fs, path = filesystem(url)
        objects = _listing(fs, path, url, empty_ok=empty_ok)
        stamps = _sync(fs, objects, target, url)
        _copies[target] = url
        _copied_at[target] = time.monotonic()
        if stamps.get("file"):
            _copies[target / stamps["file"]] = url
    return _copy_path(target)


def as_url(text: str) -> str:
    """``text`` (a path) with a local copy's directory at its start, made in this process,
    replaced by the URL it copies: what a report names for a file read from a URL."""
    for copy, url in sorted(_copies.items(), key=lambda item: -len(str(item[0]))):
        prefix = str(copy)
        if text == prefix:
            return url
        if text.startswith(prefix + os.sep) and copy.is_dir():
            return url + text[len(prefix) :].replace(os.sep, "/")
    return text


def _copy_path(target: Path) -> Path:
    """The copy's directory, or its one file when the URL named an object."""
    stamps = _read_stamps(target)
    name = stamps.get("file")
    return target / name if isinstance(name, str) else target


def _listing(fs: Any, path: str, url: str, *, empty_ok: bool) -> dict[str, dict[str, Any]]:
    """``{relative name: info}`` of the objects under ``path`` (``{"": info}`` for one
    object)."""
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        found = {}
    except Exception as exc:  # botocore's and aiohttp's errors share no base class
        raise RemoteStoreError(f"{url}: cannot list the store ({describe_error(exc)})") from exc
    base = path.rstrip("/")
    objects = {}
    for key, info in found.items():
        key = key.rstrip("/")
        name = "" if key == base else key[len(base) + 1 :] if key.startswith(base + "/") else None
        if name is None or info.get("type") == "directory":
            continue
        objects[name] = info
    if not objects:
        check_writable(url)  # names what is wrong: no bucket, no credentials
        if empty_ok:
            return objects
        raise RemoteStoreError(f"{url}: no such run, trace or root (nothing stored under it)")
    return objects


def _sync(fs: Any, objects: dict[str, dict[str, Any]], target: Path, url: str) -> dict[str, Any]:
    """Download what changed into ``target``; remove what this copy holds and the store no
    longer does. Returns the stamps written."""
    old = _read_stamps(target).get("objects") or {}
    single = list(objects) == [""]
    new: dict[str, list[Any]] = {}
    for name, info in objects.items():
        local_name = PurePosixPath(info.get("name", "")).name if single else name
        if not _safe_name(local_name):
            continue  # a key with "..", or an absolute one: never written outside the copy
        stamp = [info.get("ETag") or info.get("etag"), info.get("size"), _time(info)]
        local = target / local_name
        if old.get(local_name) != stamp or not local.is_file():
            _download(fs, info.get("name") or name, local, url)
        new[local_name] = stamp
    for gone in set(old) - set(new):
        with contextlib.suppress(OSError):
            (target / gone).unlink()
    stamps = {"url": url, "objects": new, "file": next(iter(new), None) if single else None}
    _write_stamps(target, stamps)
    return stamps


def _download(fs: Any, key: str, local: Path, url: str) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(local)
    try:
        fs.get_file(key, str(partial))
        os.replace(partial, local)
    except Exception as exc:  # botocore's and aiohttp's errors share no base class
        raise RemoteStoreError(f"{url}: cannot download {key} ({describe_error(exc)})") from exc
    finally:
        partial.unlink(missing_ok=True)


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts and "\\" not in name


def _time(info: dict[str, Any]) -> str:
    for key in ("LastModified", "mtime", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _safe(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", url)


def _read_stamps(target: Path) -> dict[str, Any]:
    try:
        stamps = orjson.loads((target / _STAMPS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _write_stamps(target: Path, stamps: dict[str, Any]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    path = target / _STAMPS
    partial = partial_path(path)
    try:
        partial.write_bytes(orjson.dumps(stamps))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _lock(target: Path) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(target, threading.Lock())
