"""HTTP routes: inference (encode, decode, reconstruct) and operations (health, readiness, model, metrics)."""
