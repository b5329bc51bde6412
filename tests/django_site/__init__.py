"""A Django 5.2 project written for threads, served unchanged on greenpool (tests only).

It is what ``gunicorn -k gthread --threads 16`` runs today: one database
connection per thread (``CONN_MAX_AGE`` from ``DJANGO_CONN_MAX_AGE``), database
sessions, ORM reads and an insert per request. ``DJANGO_DB`` picks the driver:
``psycopg2`` (the default), ``psycopg`` (psycopg 3 with Django's pool) or
``mysqlclient`` (MariaDB).
"""
