"""Adapters at the edges: DynamoDB, upstream providers, secrets, observability."""
