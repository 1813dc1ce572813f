"""The composition root: Django settings, the URL map and the ASGI application. The one place
that may import every layer."""
