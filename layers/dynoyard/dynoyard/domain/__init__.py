"""Pure domain logic: no boto3, no aiohttp, no FastAPI."""
