"""The OCI distribution client: references, credentials, TLS, auth, pull, push."""
