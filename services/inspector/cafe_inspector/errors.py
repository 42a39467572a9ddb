"""Errors the browser's API turns into HTTP answers; each message names the bad value and the fix."""

from __future__ import annotations


class InspectorError(Exception):
    """Base: `status` is the HTTP status the API answers with."""

    status = 500


class BadRequest(InspectorError, ValueError):
    """A malformed argument (a path with `..`, a key that is not 16 hex characters, ...)."""

    status = 400


class NotFound(InspectorError, LookupError):
    """No such set under DIR, or no such key in the set (including paths that leave DIR)."""

    status = 404


class Unreadable(InspectorError):
    """The data on disk does not read: a broken index, a corrupt tar, an image that will not decode."""

    status = 422


class Unwritable(InspectorError):
    """The flags file cannot be written (a read-only set folder, a full disk)."""

    status = 409
