"""What ``videomae manifest check`` found: one :class:`Problem` per issue, collected in a :class:`CheckReport`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIXABLE_KINDS", "PROBLEM_KINDS", "CheckReport", "Problem"]

PROBLEM_KINDS = (
    "malformed",
    "unknown_label",
    "duplicate",
    "conflicting_labels",
    "missing",
    "undecodable",
    "frame_count",
    "too_short",
)
FIXABLE_KINDS = ("frame_count",)  # --fix corrects these rows (when nothing else is wrong) instead of dropping them


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`check_manifest`.

    Attributes:
        line: 1-based line in the manifest (0: the whole file).
        kind: one of :data:`PROBLEM_KINDS`.
        message: what is wrong, naming the clip.
    """

    line: int
    kind: str
    message: str


@dataclass
class CheckReport:
    """The result of :func:`check_manifest`.

    Attributes:
        manifest: the checked file.
        num_rows: rows read (including the bad ones).
        problems: every problem, by line.
        fatal: the manifest could not be read at all (header or format problem); ``problems`` says why.
        fixed: the cleaned copy written, if any; ``kept`` rows went into it, ``corrected`` of them with their
            ``num_frames`` set to the count that decodes.
    """

    manifest: str
    num_rows: int
    problems: list[Problem]
    fatal: bool = False
    fixed: str | None = None
    kept: int = 0
    corrected: int = 0

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 clean, 1 problems found, 2 unreadable manifest."""
        return 2 if self.fatal else 1 if self.problems else 0

    def bad_lines(self) -> list[int]:
        """The lines with at least one problem, sorted."""
        return sorted({p.line for p in self.problems if p.line > 0})

    def format(self, max_lines: int | None = 200) -> str:
        """The report as text: one line per problem (``file:line: kind: message``) and a per-kind count."""
        head = f"{self.manifest}: {self.num_rows} rows, OK"
        if self.fatal:
            head = f"{self.manifest}: cannot be read"
        elif self.problems:
            head = (
                f"{self.manifest}: {self.num_rows} rows, {len(self.problems)} problems on {len(self.bad_lines())} rows"
            )
        out = [head]
        shown = self.problems if max_lines is None else self.problems[:max_lines]
        out += [f"  {self.manifest}:{p.line}: {p.kind}: {p.message}" for p in shown]
        if len(shown) < len(self.problems):
            out.append(f"  ... and {len(self.problems) - len(shown)} more")
        if self.problems and not self.fatal:
            counts = {k: sum(p.kind == k for p in self.problems) for k in PROBLEM_KINDS}
            out.append("  summary: " + ", ".join(f"{k}={n}" for k, n in counts.items() if n))
        if self.fixed is not None:
            fixed = f" ({self.corrected} with num_frames corrected)" if self.corrected else ""
            out.append(f"wrote {self.kept} good rows to {self.fixed}{fixed}")
        return "\n".join(out)
