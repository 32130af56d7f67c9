"""What every pre-launch check returns (:class:`Finding`) and how the launchers word failures and warnings."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Finding", "format_failures", "format_warnings"]


@dataclass(frozen=True)
class Finding:
    """The outcome of one check.

    Attributes:
        check: what was checked: the config key (``data.manifests[0]``, ``model.name``) or variable (``MASTER_PORT``).
        ok: the check passed (or did not apply; ``detail`` says which).
        detail: what was found, naming the file and line where there is one.
        fix: what to change when the check failed (or warned).
        warning: passed, but the run will not do exactly what the config says (``detail`` says what it does).
    """

    check: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


def format_failures(findings: list[Finding], script: str) -> str:
    """The failed findings as a short message: a heading, then per failure the key, what is wrong and the fix."""
    failed = [f for f in findings if not f.ok]
    noun = "problem" if len(failed) == 1 else "problems"
    lines = [f"{script}: {len(failed)} {noun} found before launch; nothing was started:"]
    for f in failed:
        detail = f.detail.splitlines() or [""]
        lines.append(f"  {f.check}: {detail[0]}")
        lines += [f"    {line.strip()}" for line in detail[1:]]
        if f.fix:
            lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)


def format_warnings(findings: list[Finding], script: str) -> str:
    """One line per passed finding that warns (``""`` when none does)."""
    lines = [f"{script}: warning: {f.check}: {f.detail}" + (f" ({f.fix})" if f.fix else "") for f in findings]
    return "\n".join(line for f, line in zip(findings, lines) if f.ok and f.warning)
