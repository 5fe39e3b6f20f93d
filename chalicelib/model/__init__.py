"""What the pipeline moves: the source's resources and the stream record around them."""
