"""A platform's client for the credref reference service: typed calls over HTTP, one error
type with credref's stable codes. It imports nothing of the service (a platform takes
this package alone); the demo and the real-server tests call the service through it."""

from client.api import CredrefClient, CredrefError

__all__ = ["CredrefClient", "CredrefError"]
