"""The names both ends of the wire use: the service (its codecs and responses) and the client
(service/client.py). Constants only, so that the client imports nothing heavy."""

NPY_MEDIA_TYPE = "application/x-npy"  # .npy bodies, both ways
MSE_HEADER = "X-Reconstruction-MSE"  # /reconstruct's per-image MSEs with PNG and .npy answers
REQUEST_ID_HEADER = "X-Request-ID"  # echoed, or made, for every request
