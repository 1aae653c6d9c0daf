"""HTTP routes: inference (encode, decode, reconstruct: ``inference.py``, served by the request
layer), the Open Inference Protocol (``v2.py``), operations (health, readiness, model, metrics),
roll-outs (``admin.py``) and the page (``ui.py``)."""
