"""Reports of finished runs."""

from autocomp.report.writer import write_report

__all__ = ["write_report"]
