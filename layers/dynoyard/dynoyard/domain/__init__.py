"""Pure domain logic: no boto3, no httpx, no FastAPI."""
