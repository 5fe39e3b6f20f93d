"""Chaos for the local cloud: faults injected around the pipeline, never inside it.

`python -m localcloud run --chaos SPEC [--seed S]`, where SPEC is `all` or a comma list of
`NAME` or `NAME=probability`. Each fault is a small object in `FAULTS`, injected at one of
three layers:

- the fake API (`api-5xx`, `api-429`, `api-timeout`, `poison`): the built-in API's own
  `FaultInjector` misbehaves; absent with `--api-url`;
- the AWS clients (`kinesis-partial`, `kinesis-throttle`, `dynamodb-throttle`): botocore event
  hooks on the pipeline's cached boto3 clients (`chalicelib.aws.clients.client`) and on PynamoDB's
  clients answer with throttling errors (which botocore's standard retry mode retries), fail
  part of a PutRecords call, or leave part of a BatchWriteItem in `UnprocessedItems`, exactly
  as the services do;
- the trigger (`consumer-crash`, `duplicate-delivery`, `producer-timeout`,
  `postgres-disconnect`): the driver's call of a handler crashes the load function after it
  wrote part of its batch, delivers a batch twice, cuts the ingest off mid-run (its context
  runs out of time, or its process "dies" at a PutRecords call or a checkpoint) before
  re-invoking it, or terminates the pipeline's PostgreSQL sessions server-side.

Every fault that is named fires at its first opportunity, then with its probability (default
per fault, or `NAME=p`), drawn from a generator seeded with `--seed` and the fault's name, so a
chaos run always exercises what it names. `times_injected` per fault goes into the JSON
summary. Without `poison`, a chaos run must leave the stores exactly as a clean run does.

The package by concern: `fault.py` (the base class), `api_faults.py`, `aws_faults.py` and
`trigger_faults.py` (the faults of each layer), `catalogue.py` (`FAULTS` by name and the SPEC
parser) and `run.py` (`Chaos`: one run's faults, installed and counted).
"""

from localcloud.chaos.api_faults import ApiFault
from localcloud.chaos.catalogue import FAULTS, ChaosSpecError, parse_spec
from localcloud.chaos.fault import Fault, SimulatedCrash
from localcloud.chaos.run import Chaos

__all__ = ["FAULTS", "ApiFault", "Chaos", "ChaosSpecError", "Fault", "SimulatedCrash", "parse_spec"]
