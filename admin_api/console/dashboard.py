"""The Dashboard: figures from the database (services/dashboard.py)."""

from __future__ import annotations

from .pages import Page, render
from .session import Visit


class DashboardViews:
    def __init__(self, services):
        self.services = services

    def show(self, visit: Visit) -> Page:
        figures = self.services.dashboard.figures()
        return render("dashboard.html", visit, heading="Dashboard", current="/console/", figures=figures)
