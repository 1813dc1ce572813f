"""The bank's admin site: Django's, plus the daily balances list (web.daily_balances) under Projections.

Django's admin refuses to register a model with a composite primary key (DailyBalance is keyed by account and
day), so its list is a view of this site instead of a ModelAdmin: the site adds its URLs, and an entry in the
app list (the index, the app's page and the sidebar) for staff who hold its view permission.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path, reverse


class BankAdminSite(admin.AdminSite):
    def get_urls(self) -> list[Any]:
        from web import daily_balances

        def changelist(request: HttpRequest) -> HttpResponse:
            return daily_balances.changelist(request, self)

        def csv_download(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
            return daily_balances.csv_download(request, self)

        ours = [
            path(
                "projections/dailybalance/",
                self.admin_view(changelist),
                name="projections_dailybalance_changelist",
            ),
            path("projections/dailybalance/csv/", self.admin_view(csv_download), name="projections_dailybalance_csv"),
        ]
        return [*ours, *super().get_urls()]

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        from projections.models import DailyBalance
        from web import daily_balances

        apps = super().get_app_list(request, app_label)
        if app_label not in (None, "projections") or not request.user.has_perm(daily_balances.PERMISSION):
            return apps
        opts = DailyBalance._meta
        entry = {
            "model": DailyBalance,
            "name": str(opts.verbose_name_plural).capitalize(),
            "object_name": opts.object_name,
            "perms": {"add": False, "change": False, "delete": False, "view": True},
            "admin_url": reverse("admin:projections_dailybalance_changelist", current_app=self.name),
            "add_url": None,
            "view_only": True,
        }
        for app in apps:
            if app["app_label"] == "projections":
                app["models"] = sorted([*app["models"], entry], key=lambda model: model["name"].lower())
                return apps
        # A user who may see no other projection still finds this one under Projections.
        config = DailyBalance._meta.app_config
        found = {
            "name": config.verbose_name,
            "app_label": config.label,
            "app_url": reverse("admin:app_list", kwargs={"app_label": config.label}, current_app=self.name),
            "has_module_perms": True,
            "models": [entry],
        }
        return sorted([*apps, found], key=lambda app: app["name"].lower())


class BankAdminConfig(AdminConfig):
    """django.contrib.admin with BankAdminSite as `admin.site` (settings.INSTALLED_APPS names this)."""

    default_site = "web.admin_site.BankAdminSite"
