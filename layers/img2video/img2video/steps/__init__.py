"""The pipeline's steps, one module per Lambda function; each imports core, aws and novita, never another step."""
