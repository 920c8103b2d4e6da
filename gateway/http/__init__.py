"""The HTTP layer: authentication and CORS middleware, the one way to build JSON and problem
responses, the REST API and its validation, the public health route, and the dashboard's files."""
