"""Gateway Lambda: the FastAPI app behind API Gateway (REST), buffered responses."""

from dynoyard.api.app import create_app
from dynoyard.api.lambda_entry import mangum_handler

app = create_app()
handler = mangum_handler(app)
