"""The stream stage: records on Kinesis, between the ingest and the load."""
