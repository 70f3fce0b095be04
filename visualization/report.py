"""The closing lines every plotting script prints, and its exit status."""

import sys


def report(written: int, skipped: list[str], save_path: str) -> int:
    """Name the unreadable images, say how many pictures were written; 1 when any was skipped."""
    for name in skipped:
        print(f"skipped unreadable image {name}", file=sys.stderr)
    print(f"wrote {written} images to {save_path}")
    return 1 if skipped else 0
