#!/bin/bash
# Streaming entrance: the same app under uvicorn, behind the Lambda Web Adapter.
exec python -m uvicorn dynoyard.api.app:create_app --factory --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log --proxy-headers --forwarded-allow-ips 127.0.0.1
