"""DynamoDB, split by job: the attribute codec, the client (signing and retries), the hot
path's keys and ledger, the operator's administration, usage records, and the rest.
`GatewayStore` (gateway_store.py) puts the gateway's jobs together over one client,
`DynamoStore` (store.py) all of them. This package imports nothing itself, so that the
gateway's cold start pays only for the modules it uses."""
