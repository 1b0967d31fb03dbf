"""Uploads a file to chunkd with tuspy, the tus client from PyPI.

usage: tuspy_upload.py ENDPOINT TOKEN FILE CHUNK_SIZE MODE
MODE: whole  - one Uploader, checksums on, all chunks
      resume - two chunks, then a new Uploader resumes from the server's offset
Prints the upload URL on the last line.
"""
import sys

from tusclient import client

endpoint, token, path, chunk_size, mode = sys.argv[1:6]
chunk_size = int(chunk_size)
tus = client.TusClient(endpoint, headers={"Authorization": "Token " + token})

if mode == "whole":
    # Retries ask the server for its offset and go on from there.
    uploader = tus.uploader(path, chunk_size=chunk_size, upload_checksum=True,
                            retries=5, retry_delay=0.2,
                            metadata={"filename": "tuspy-" + path.rsplit("/", 1)[-1]})
    uploader.upload()
    print(uploader.url)
elif mode == "resume":
    first = tus.uploader(path, chunk_size=chunk_size, metadata={"filename": "resumed.bin"})
    first.upload_chunk()
    first.upload_chunk()
    # A new client knows only the URL: it asks the server for the offset.
    second = tus.uploader(path, chunk_size=chunk_size, url=first.url)
    assert second.offset == 2 * chunk_size, second.offset
    second.upload()
    print(second.url)
else:
    sys.exit("unknown mode " + mode)
