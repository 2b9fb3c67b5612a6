"""Local running: DynamoDB Local, tables from template.yaml, the demo upstream, `make dev`."""
