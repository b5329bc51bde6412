"""Settings of the test project; the environment picks the driver and CONN_MAX_AGE."""

import os
import sys

DRIVER = os.environ.get("DJANGO_DB", "psycopg2")
if DRIVER == "psycopg2":
    # Django's postgresql backend takes psycopg 3 whenever it can import it; the
    # test extras install both, so hide psycopg 3 to serve through psycopg2.
    sys.modules["psycopg"] = None  # type: ignore[assignment]
elif DRIVER not in ("psycopg", "mysqlclient"):
    raise ValueError(f"DJANGO_DB={DRIVER!r}: use psycopg2, psycopg or mysqlclient")

SECRET_KEY = "greenpool-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "tests.django_site.shop",
]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "tests.django_site.urls"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_options = {"application_name": os.environ.get("DJANGO_DB_APPLICATION", "greenpool-django")}
if DRIVER == "psycopg":
    _options["pool"] = True  # Django's psycopg_pool.ConnectionPool, with its defaults
MAX_AGE = int(os.environ.get("DJANGO_CONN_MAX_AGE", "0"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": "postgres",
        "NAME": "test",
        # Django refuses persistent connections together with its pool.
        "CONN_MAX_AGE": 0 if DRIVER == "psycopg" else MAX_AGE,
        "OPTIONS": _options,
    }
}
if DRIVER == "mysqlclient":  # MariaDB through mysqlclient, the driver Django recommends
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.mysql",
        "HOST": "127.0.0.1",
        "PORT": "3306",
        "USER": "root",
        "PASSWORD": "",
        "NAME": "test",
        "CONN_MAX_AGE": MAX_AGE,
    }
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
