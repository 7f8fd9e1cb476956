"""Distributed campaigns: zone agents on Celery with a Redis broker.

An agent runs inside one zone and connects out to the broker (nothing connects into a control
zone); `run-plan --broker` sends each plan entry to its zone's queue and collects signed evidence
bundles. `broker` holds what both sides share, `worker` the agent, `coordinator` the run-plan side.
"""
