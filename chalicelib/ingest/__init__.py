"""The ingest stage: fetch the source's pages, screen them and publish them to the stream."""
