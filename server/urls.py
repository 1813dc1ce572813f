"""The app's URLs: pages, htmx endpoints, auth and the admin."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from web import operations, views
from web.forms import ThrottledLoginForm

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("accounts/open", views.open_account, name="open-account"),
    path("accounts/<uuid:account_id>/", views.account_detail, name="account"),
    path("accounts/<uuid:account_id>/deposit", views.move_money, {"kind": "deposit"}, name="deposit"),
    path("accounts/<uuid:account_id>/withdraw", views.move_money, {"kind": "withdraw"}, name="withdraw"),
    path("accounts/<uuid:account_id>/transfer", views.transfer, name="transfer"),
    path("accounts/<uuid:account_id>/statement", views.statement, name="statement"),
    path("accounts/<uuid:account_id>/statement.csv", views.statement_csv, name="statement-csv"),
    path("commands/<uuid:account_id>/<uuid:command_id>", views.command_status, name="command-status"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(authentication_form=ThrottledLoginForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("admin/operations/", operations.operations, name="operations"),
    path("metrics", operations.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]
