"""Health probes, local target process supervision and anomaly classification."""
