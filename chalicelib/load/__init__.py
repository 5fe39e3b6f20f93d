"""The load stage: consume the stream and write every record to the sinks."""
