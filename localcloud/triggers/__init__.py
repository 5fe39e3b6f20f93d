"""What Lambda's service does around the functions, done for the local cloud.

`lambda_runtime.py` builds the events and contexts Lambda passes, `kinesis.py` is the Kinesis
event-source mapping, `sqs.py` the SQS one, `async_invoker.py` Lambda's asynchronous
invocation, and `lambda_service.py` runs each function in warm worker processes:
`function_pool.py` (the cloud's side) starts and calls them, `function_process.py` is what runs
in each, and `function_aws_calls.py` counts its AWS calls and captures its async invocations.
"""
