"""Test and benchmark helpers (loopback stand-ins for remote services); not part of the public API."""
