"""Pure decisions: the sidecar, keys, jobs, images, the wait policy, notices, errors. No AWS, no HTTP (make lint checks)."""
