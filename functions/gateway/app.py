"""Gateway Lambda: the FastAPI app behind API Gateway (REST), buffered responses."""

from mangum import Mangum

from dynoyard.api.app import create_app
from dynoyard.observability import lambda_handler

app = create_app()
handler = lambda_handler(Mangum(app, lifespan="off"))
