"""Console Lambda: the console API's FastAPI app behind API Gateway (REST, `/api/{proxy+}`)."""

from dynoyard.api.lambda_entry import mangum_handler
from dynoyard.console.app import create_console_app

app = create_console_app()
handler = mangum_handler(app)
