"""Reports of finished runs."""

from autocomp.report.writer import REPORT_VERSION, format_number, write_report

__all__ = ["REPORT_VERSION", "format_number", "write_report"]
