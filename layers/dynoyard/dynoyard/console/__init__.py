"""The console API (`/api`): sign-in by emailed link, cookie sessions, organizations and
their keys. Served by its own Lambda function (functions/console/app.py) and, locally, on
`make dev`'s port beside the gateway."""
