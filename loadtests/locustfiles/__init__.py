"""Locustfiles for the harness; locust loads them by path in its own process."""
