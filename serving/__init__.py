"""The platform-facing reference service."""
