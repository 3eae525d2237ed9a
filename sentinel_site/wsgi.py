import os

from django.core.wsgi import get_wsgi_application

from sentinel_site import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
application = get_wsgi_application()
tracing.configure("sentinel-web")  # buffered spans are flushed at exit (the SDK registers atexit)
