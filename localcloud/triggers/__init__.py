"""What Lambda's service does around the functions, done for the local cloud.

`lambda_runtime.py` builds the events and contexts Lambda passes, `kinesis.py` is the Kinesis
event-source mapping, `sqs.py` the SQS one, `async_invoker.py` Lambda's asynchronous
invocation, and `lambda_service.py` runs each function in warm worker processes that
`function_pool.py` hosts.
"""
