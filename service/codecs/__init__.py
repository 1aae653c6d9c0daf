"""Codecs: bytes <-> numpy arrays. No HTTP and no model in here, only formats and their checks."""
