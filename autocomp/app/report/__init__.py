"""Reports of finished runs: the typed record (report.json), its wording (the terminal and report.md), its files."""

from autocomp.app.report.record import REPORT_VERSION, Finalist, Report, load_report, save_report
from autocomp.app.report.writer import write_report

__all__ = ["REPORT_VERSION", "Finalist", "Report", "load_report", "save_report", "write_report"]
