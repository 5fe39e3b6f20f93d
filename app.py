"""Chalice entry point: the pipeline's four Lambda functions, each a few lines.

The schedule, stream and batch settings are read from the environment when Chalice loads the
app (at deploy time), the same variables the functions read at run time. In Lambda, importing
the app is the function's init: it prepares its clients and connection there
(`chalicelib.execution_environment`).
"""

from typing import Any

from chalice import Chalice
from chalice.app import CloudWatchEvent, KinesisEvent, SQSEvent

from chalicelib import execution_environment, handlers
from chalicelib.settings import get_settings

app = Chalice(app_name="moovitamix-pipeline")
settings = get_settings()
execution_environment.prepare()


@app.schedule(settings.schedule, name="ingest")
def ingest(event: CloudWatchEvent) -> dict[str, Any]:
    """Fetch every resource from the API and publish it to the stream."""
    return handlers.handle_schedule(event.to_dict(), event.context)


@app.on_kinesis_record(
    stream=settings.stream_name,
    batch_size=settings.batch_size,
    starting_position="TRIM_HORIZON",
    maximum_batching_window_in_seconds=settings.batching_window_s,
    name="load",
)
def load(event: KinesisEvent) -> dict[str, Any]:
    """Write a batch of stream records into the stores, newest wins."""
    return handlers.handle_kinesis(event.to_dict(), event.context)


@app.schedule(settings.reconcile_schedule, name="reconcile")
def reconcile(event: CloudWatchEvent) -> dict[str, Any]:
    """Mark finished runs succeeded (fetched = stored + quarantined) or failed, naming losses."""
    return handlers.handle_reconcile(event.to_dict(), event.context)


@app.on_sqs_message(queue=settings.work_queue, batch_size=1, name="ingest_worker")
def ingest_worker(event: SQSEvent) -> dict[str, Any]:
    """Fetch and publish one page range of a resource too large for one invocation."""
    return handlers.handle_work(event.to_dict(), event.context)
