"""Placeholder: filled in by the issue-10 work (see greenpool/monkey.py)."""


def install() -> None:
    """Idempotent: install this piece of greenpool.monkey.patch_all()."""
