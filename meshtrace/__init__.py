"""meshtrace: a service mesh that traces every request, in Python."""

__version__ = "0.1.0"
