"""Loaded by schemathesis (SCHEMATHESIS_HOOKS): tus bodies are raw bytes
under their own media type, serialized as application/octet-stream is."""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
