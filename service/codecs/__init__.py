"""Codecs: bytes <-> numpy arrays. No HTTP and no model in here, only formats and their checks;
they raise the service's plain errors (service/errors.py), and tests/test_layers.py checks that
none of them loads a web framework."""
