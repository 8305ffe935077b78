"""Novita's API: the HTTP client, its answers' models, its errors, the streamed request body. No AWS."""
