"""HTTP edge: FastAPI routers, OpenAI error shapes, request id and server timing."""
