"""The AWS adapters: clients, idempotency, secrets, S3 objects, task tokens, the jobs table, the line for task slots."""
