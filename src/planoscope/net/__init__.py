"""Network plumbing every component shares: listening sockets, the HTTP server, credentials, the OTLP client."""
