"""A minimal Django project for the tests of vimbiso_state.integrations.django.

Its settings and URLconf are a bare project's plus the lines docs/django.md tells a bot to
add, taken from the doc as written; its views module is the doc's. Written into a directory
and imported from there: in this process (Django's test client, ``call_command``) or by a
``manage.py``-like subprocess and gunicorn.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from doc_examples import named_block

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "django.md"
PACKAGE = "vimbiso_site"

BASE_SETTINGS = f'''
import os

SECRET_KEY = "only-for-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {{}}
ROOT_URLCONF = "{PACKAGE}.urls"
USE_TZ = True
# Served by gunicorn, the library's warnings reach the server's stderr as a deployed bot's
# logging would send them (in the test process, the library's loggers keep no handler).
if os.environ.get("SITE_LOGS_TO_STDERR"):
    LOGGING = {{
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {{"stderr": {{"class": "logging.StreamHandler"}}}},
        "loggers": {{"vimbiso_state": {{"handlers": ["stderr"], "level": "WARNING"}}}},
    }}
'''

BASE_URLS = f"""
from django.urls import path

from {PACKAGE} import views, workers

urlpatterns = [
    path("health/", views.health_check),
    path("count/", workers.count),
]
"""

# A view the tests use to see which worker served a request and what the state holds.
WORKERS = """
import os
import time

from django.http import JsonResponse

from vimbiso_state.integrations.django import state_service

PHONE = "+263771234567"


def count(request):
    def add_one(conversation):
        conversation.context["n"] = conversation.context.get("n", 0) + 1

    conversation = state_service().update(PHONE, add_one)
    time.sleep(float(request.GET.get("hold", 0)))  # keeps this worker busy: the next goes on
    return JsonResponse({"pid": os.getpid(), "n": conversation.context["n"]})
"""

# What --preload does with a bot that builds its service at import: the master builds it.
PREBUILT_WSGI = """
from django.core.wsgi import get_wsgi_application

from vimbiso_state.integrations.django import state_service

application = get_wsgi_application()
state_service().start("+263771234567")
"""


def write_site(directory: Path) -> Path:
    """The project's package in ``directory``; put ``directory`` on the path to import it."""
    package = directory / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    settings = BASE_SETTINGS + "\n" + named_block(GUIDE, "settings.py")
    (package / "settings.py").write_text(settings)
    (package / "urls.py").write_text(BASE_URLS + "\n" + named_block(GUIDE, "urls.py"))
    (package / "views.py").write_text(named_block(GUIDE, "views.py"))
    (package / "workers.py").write_text(textwrap.dedent(WORKERS))
    (package / "wsgi.py").write_text(
        "from django.core.wsgi import get_wsgi_application\n\n"
        "application = get_wsgi_application()\n"
    )
    (package / "wsgi_prebuilt.py").write_text(PREBUILT_WSGI)
    return package


_site: Path | None = None


def setup_in_process() -> None:
    """Django set up in this process with the site, once (Django's settings are global)."""
    global _site
    import django

    if _site is not None:
        return
    directory = Path(tempfile.mkdtemp(prefix="vimbiso-django-"))
    atexit.register(shutil.rmtree, directory, True)
    write_site(directory)
    sys.path.insert(0, str(directory))
    os.environ["DJANGO_SETTINGS_MODULE"] = f"{PACKAGE}.settings"
    django.setup()
    _site = directory
