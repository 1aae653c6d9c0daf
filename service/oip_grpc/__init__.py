"""The Open Inference Protocol over gRPC: its messages (generated from predict_v2.proto) and its server."""
