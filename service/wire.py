"""The names both ends of the wire use: the service (its codecs and responses) and the client
(service/client.py). Constants only, so that the client imports nothing heavy."""

NPY_MEDIA_TYPE = "application/x-npy"  # .npy bodies, both ways
# /reconstruct's per-image scores with PNG and .npy answers, comma-separated, one per image
MSE_HEADER = "X-Reconstruction-MSE"
NOVELTY_HEADER = "X-Novelty"  # log-odds that the image is not a digit (absent: the model has no novelty head)
PERCENTILE_HEADER = "X-Anomaly-Percentile"  # of the decision score among normal images, 0..100 (absent: uncalibrated)
ANOMALY_HEADER = "X-Anomaly"  # true or false (absent: the model is uncalibrated)
QUANTILE_HEADER = "X-Anomaly-Quantile"  # the threshold quantile the decisions used
REQUEST_ID_HEADER = "X-Request-ID"  # echoed, or made, for every request
