"""The AWS clients the functions share, and DynamoDB batch calls that retry what is left."""
