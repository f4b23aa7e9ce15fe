"""The WSGI application for gunicorn: ``gunicorn provisiond.wsgi:app``.

Settings come from ``PROVISIOND_CONFIG`` and ``PROVISIOND_*`` variables.
"""

from provisiond import create_app

app = create_app()
