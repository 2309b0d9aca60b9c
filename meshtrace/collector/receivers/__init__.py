"""Receivers: components that take spans from the network and push them into pipelines."""
