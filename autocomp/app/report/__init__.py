"""Reports of finished runs."""

from autocomp.app.report.writer import REPORT_VERSION, write_report

__all__ = ["REPORT_VERSION", "write_report"]
