"""Sign in and out. Passwords, lockout and the audit trail live in `clipmod.review.users`."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from api.dashboard.shell import SIGNED_IN_AT, Person, bp, me, safe_next
from api.services import services
from clipmod.db import transaction
from clipmod.models import User
from clipmod.review import audit, users


def _policy() -> users.LoginPolicy:
    settings = services().settings
    return users.LoginPolicy(
        lock_after=settings.login_lock_after, lock_for=timedelta(seconds=settings.login_lock_s)
    )


@bp.get("/login")
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    return render_template("login.html", next=request.args.get("next", ""), email="")


@bp.post("/login")
def login_post() -> Any:
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    target = safe_next(request.form.get("next"))
    with transaction(services().sessions) as db:
        result = users.authenticate(
            db, email, password, _policy(), client=request.remote_addr or ""
        )
    if result.user is None:
        return render_template(
            "login.html", error=result.message, next=request.form.get("next", ""), email=email
        ), 401
    session.clear()  # a fresh session (and CSRF token) on every sign-in: no fixation
    login_user(Person(result.user))
    session.permanent = True
    session[SIGNED_IN_AT] = time.time()
    return redirect(target)


@bp.post("/logout")
@login_required
def logout() -> Any:
    with transaction(services().sessions) as db:
        user = db.get(User, me().id)
        if user is not None:
            users.end_sessions(user)
            audit.record(db, "logout", user=user)
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("dashboard.login"))
