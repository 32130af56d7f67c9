"""Class-name matching shared by manifest merging and checkpoint head remapping."""

from __future__ import annotations

__all__ = ["normalize_class_name"]


def normalize_class_name(name: str) -> str:
    """Key for matching class names across datasets: case, quotes, underscores and spacing ignored.

    Label files of the same classes differ in case, quoting and underscores vs spaces (``air_drumming``,
    ``"air drumming"``, ``Air drumming``); Kinetics-710 merges Kinetics-400/600/700 by name.
    ``"Playing_Guitar "`` -> ``"playing guitar"``.
    """
    return " ".join(name.strip().strip("\"'").replace("_", " ").lower().split())
