"""A Django project protected by API keys: see settings.py and urls.py."""
