"""Loaded by schemathesis (SCHEMATHESIS_HOOKS): the bodies of tus and of the
IETF draft are raw bytes under media types of their own, serialized as
application/octet-stream is."""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
schemathesis.serializer.alias("application/partial-upload", "application/octet-stream")
