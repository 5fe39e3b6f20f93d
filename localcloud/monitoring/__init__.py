"""What CloudWatch does in AWS, done for the local cloud, and the health report drawn from it.

`emf_extraction.py` turns the handlers' EMF lines into log events and metrics (CloudWatch
Logs' job), `service_metrics.py` publishes what Lambda, Kinesis and SQS report about
themselves, `alarm_evaluator.py` evaluates the alarms moto stores but never runs,
`run_monitor.py` (`LocalMonitoring`) wires them around each run, and `health_report.py`
collects what the dashboard would show, which `health_page.py` draws.
"""

from localcloud.monitoring.run_monitor import LocalMonitoring

__all__ = ["LocalMonitoring"]
