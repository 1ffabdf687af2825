"""Fail the import of :mod:`trio_tlsretry.testing` with an install hint without trustme.

Imported first by the package, so the hint, rather than an error from deep
inside a helper module, is what a user without the ``testing`` extra sees.
"""

try:
    import trustme  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"trio_tlsretry.testing needs trustme ({exc}): pip install 'trio-tlsretry[testing]'",
        name="trustme",
    ) from None
